//! botfleet: a fleet of Telegram bots on one small host. One supervisor
//! process runs one worker process per bot token. See ARCHITECTURE.md for the
//! map of modules and threads; DESIGN.md (docs/) for the contract.

pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod exit;
pub mod fleet;
pub mod health;
pub mod ipc;
pub mod jsonread;
pub mod lock;
pub mod logging;
pub mod sandbox;
pub mod sdnotify;
pub mod signals;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod sys;
pub mod telegram;
pub mod token;
pub mod watch;
pub mod watcher;
pub mod worker;
