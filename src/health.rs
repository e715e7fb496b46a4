//! Placeholder: the health server (GET /, /ping, /health, /metrics, POST
//! /restart) is filled in by its own change. The supervisor already calls
//! this interface.

use crate::config::Settings;
use crate::supervisor::{Event, FleetView};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

/// The running health server, if it could bind.
#[derive(Debug)]
pub struct Health;

impl Health {
    /// Binds HEALTH_BIND:PORT (then PORT+1, PORT+2); without a free port
    /// the fleet runs on without HTTP and the log says so.
    pub fn start(_settings: &Settings, _view: Arc<Mutex<FleetView>>, _tx: Sender<Event>) -> Health {
        Health
    }

    /// Applies reloaded settings: rebinds if PORT or HEALTH_BIND changed.
    pub fn reconfigure(&mut self, _settings: &Settings) {}

    /// Stops serving.
    pub fn stop(self) {}
}
