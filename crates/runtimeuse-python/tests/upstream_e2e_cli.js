// Stands in for the upstream runtime's CLI (`packages/runtimeuse/dist/cli.js`) when .ci/run
// runs the upstream client's end-to-end suite through this package: the suite's fixture starts
// `node cli.js --handler echo_handler.js --port N`; this runs `runtimeuse serve --handler
// scripted` on that port instead (the project's runtime; its scripted handler follows the echo
// handler's directives). The binary is $RUNTIMEUSE_BIN.
const { spawn } = require("child_process");

const args = process.argv.slice(2);
const port = args[args.indexOf("--port") + 1];
const child = spawn(
  process.env.RUNTIMEUSE_BIN,
  ["serve", "--host", "127.0.0.1", "--port", port, "--handler", "scripted", "-q"],
  { stdio: "inherit" },
);
process.on("SIGTERM", () => child.kill("SIGTERM"));
child.on("exit", (code) => process.exit(code ?? 0));
