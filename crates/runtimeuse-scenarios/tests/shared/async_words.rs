// The words of the shared scenarios that are the same for every async adapter: a call is
// awaited, a callback returns a ready future, events come from a `Stream`. Included by the tokio
// and async-std test files, which define `scenario!` and `thread!` themselves (those differ).

macro_rules! wait {
    ($call:expr) => {
        $call.await
    };
}

macro_rules! cb {
    (move |$arg:pat_param| $body:expr) => {
        move |$arg| std::future::ready($body)
    };
}

macro_rules! next {
    ($events:expr) => {
        futures_util::StreamExt::next(&mut $events).await
    };
}
