"""The upstream 0.15.1 public API, name for name, introspected from the installed upstream
package rather than listed here: every name of its `__all__` exists in `runtimeuse_rs`, each
class and function accepts the upstream's keyword arguments (same names, same defaults where
the upstream has one), and the models behave as pydantic models."""

import dataclasses
import inspect
import typing

import pydantic
import pytest
import runtimeuse_client
import runtimeuse_rs

UPSTREAM_NAMES = list(runtimeuse_client.__all__)


def test_the_upstream_is_the_version_we_match():
    from importlib.metadata import version

    assert version("runtimeuse-client") == "0.15.1"
    assert len(UPSTREAM_NAMES) == 36


@pytest.mark.parametrize("name", UPSTREAM_NAMES)
def test_every_upstream_name_exists(name):
    assert hasattr(runtimeuse_rs, name), name
    assert name in runtimeuse_rs.__all__


def _parameters(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    return {
        p.name: p
        for p in sig.parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _classes():
    for name in UPSTREAM_NAMES:
        up = getattr(runtimeuse_client, name)
        if inspect.isclass(up) and not getattr(up, "_is_protocol", False):
            yield name


@pytest.mark.parametrize("name", list(_classes()))
def test_each_class_accepts_the_upstream_keyword_arguments(name):
    up, ours = getattr(runtimeuse_client, name), getattr(runtimeuse_rs, name)
    assert inspect.isclass(ours)
    if issubclass(up, pydantic.BaseModel):
        assert issubclass(ours, pydantic.BaseModel)
        up_fields, our_fields = up.model_fields, ours.model_fields
        for field, info in up_fields.items():
            assert field in our_fields, f"{name}.{field}"
            mine = our_fields[field]
            assert mine.is_required() == info.is_required(), f"{name}.{field}"
            if not info.is_required():
                assert mine.get_default(call_default_factory=True) == info.get_default(
                    call_default_factory=True
                ), f"{name}.{field}"
        # Fields of ours beyond the upstream's are optional: upstream code never sets them.
        for field in set(our_fields) - set(up_fields):
            assert not our_fields[field].is_required(), f"{name}.{field}"
        return
    if dataclasses.is_dataclass(up):
        up_fields = {f.name: f for f in dataclasses.fields(up)}
        our_fields = {f.name: f for f in dataclasses.fields(ours)}
        for field, f in up_fields.items():
            assert field in our_fields, f"{name}.{field}"
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            mine = our_fields[field]
            assert (mine.default is dataclasses.MISSING and mine.default_factory is dataclasses.MISSING) == required
            if f.default is not dataclasses.MISSING:
                assert mine.default == f.default, f"{name}.{field}"
        return
    up_params, our_params = _parameters(up), _parameters(ours)
    if up_params is None:
        return
    for param, p in up_params.items():
        assert param in our_params, f"{name}({param}=)"
        mine = our_params[param]
        assert (mine.default is inspect.Parameter.empty) == (p.default is inspect.Parameter.empty), param
        if p.default is not inspect.Parameter.empty:
            assert mine.default == p.default, f"{name}({param}=)"


@pytest.mark.parametrize("name", ["RuntimeUseClient", "RuntimeUseSession"])
def test_the_client_methods_take_the_upstream_arguments(name):
    up, ours = getattr(runtimeuse_client, name), getattr(runtimeuse_rs, name)
    for method, fn in inspect.getmembers(up, callable):
        if method.startswith("_"):
            continue
        assert hasattr(ours, method), f"{name}.{method}"
        up_params = list(inspect.signature(fn).parameters)
        our_params = list(inspect.signature(getattr(ours, method)).parameters)
        assert our_params[: len(up_params)] == up_params, f"{name}.{method}"


def test_the_callback_aliases_are_callable_types():
    for name in ("OnAssistantMessageCallback", "OnCommandOutputCallback", "OnArtifactUploadRequestCallback"):
        assert typing.get_origin(getattr(runtimeuse_rs, name)) is not None


def test_models_dump_and_construct_by_keyword_as_upstream():
    for cls_name, kwargs in [
        ("CommandInterface", {"command": "ls", "cwd": "/tmp"}),
        ("QueryResult", {"data": {"type": "text", "text": "hi"}, "metadata": {"a": 1}}),
        ("CommandExecutionResult", {"results": [{"command": "ls", "exit_code": 0}]}),
        ("AssistantMessageInterface", {"message_type": "assistant_message", "text_blocks": ["a"]}),
        ("ArtifactUploadResult", {"presigned_url": "http://x", "content_type": "text/plain"}),
    ]:
        up = getattr(runtimeuse_client, cls_name)(**kwargs)
        ours = getattr(runtimeuse_rs, cls_name)(**kwargs)
        assert ours.model_dump() == up.model_dump(), cls_name
        assert ours.model_dump(mode="json") == up.model_dump(mode="json"), cls_name


def test_options_validate_artifacts_as_upstream():
    for mod in (runtimeuse_client, runtimeuse_rs):
        with pytest.raises(ValueError):
            mod.QueryOptions(system_prompt="", model="m", artifacts_dirs=["/a"])
        with pytest.raises(ValueError):
            mod.ExecuteCommandsOptions(on_artifact_upload_request=lambda r: None)
        mod.ExecuteCommandsOptions(artifacts_dirs=[])


def test_the_exceptions_carry_error_and_metadata_as_upstream():
    up = runtimeuse_client.AgentRuntimeError("boom", metadata={"k": 1})
    ours = runtimeuse_rs.AgentRuntimeError("boom", metadata={"k": 1})
    assert (ours.error, ours.metadata, str(ours)) == (up.error, up.metadata, str(up))
    assert issubclass(runtimeuse_rs.CancelledException, Exception)


def test_a_client_needs_a_url_or_a_transport():
    with pytest.raises(ValueError):
        runtimeuse_rs.RuntimeUseClient()
