// grammY echo bot with @grammyjs/runner for the botfleet benchmark, as
// grammY's docs write one (bot.on("message:text"), run(bot), stop on
// SIGTERM), pointed at the sandbox.
//
// Usage: node grammy_echo.js TOKEN SANDBOX_URL  (NODE_PATH: the scratch
// directory's node_modules)
const { Bot } = require("grammy");
const { run } = require("@grammyjs/runner");

const [token, sandbox] = process.argv.slice(2);
const bot = new Bot(token, { client: { apiRoot: sandbox.replace(/\/$/, "") } });
bot.on("message:text", (ctx) => ctx.reply(ctx.message.text));

const runner = run(bot, { runner: { fetch: { timeout: 30 } } });
const stop = () => runner.isRunning() && runner.stop();
process.once("SIGINT", stop);
process.once("SIGTERM", stop);
