//! callback-gate: the browser side of OAuth connection flows.
//!
//! The service starts each flow (state, PKCE, nonce, browser binding), terminates the provider's callback
//! (validates, exchanges the code, stores the connected account with its tokens sealed), and turns every failure
//! into a named outcome with a reference id and a page that tells the user what to do next.

pub mod account;
pub mod api;
pub mod assets;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod context;
pub mod crypto;
pub mod demo;
pub mod edge;
pub mod endings;
pub mod flight;
pub mod flow;
pub mod i18n;
pub mod limits;
pub mod openapi;
pub mod outcome;
pub mod pages;
pub mod provider;
pub mod proxy;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tokens;
pub mod webhooks;
