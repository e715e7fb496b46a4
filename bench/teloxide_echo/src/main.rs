//! teloxide echo bot for the botfleet benchmark, as teloxide's README
//! writes one (`teloxide::repl`), pointed at the sandbox.
//!
//! Usage: teloxide_echo TOKEN SANDBOX_URL

use teloxide::prelude::*;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let token = args.next().expect("usage: teloxide_echo TOKEN SANDBOX_URL");
    let api = args.next().expect("usage: teloxide_echo TOKEN SANDBOX_URL");
    let bot = Bot::new(token).set_api_url(url::Url::parse(&api).expect("a URL"));
    teloxide::repl(bot, |bot: Bot, msg: Message| async move {
        if let Some(text) = msg.text() {
            bot.send_message(msg.chat.id, text).await?;
        }
        Ok(())
    })
    .await;
}
