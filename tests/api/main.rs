//! Integration tests: each spawns the real application on port 0 with a fresh SQLite database and a wiremock
//! provider, and talks HTTP to it.

mod helpers;

mod abuse;
mod callback;
mod connections;
mod credentials;
mod endings;
mod exchange;
mod flow;
mod hostile;
mod id_token;
mod instances;
mod lifecycle;
mod links;
mod openapi;
mod operations;
mod outcomes;
mod pages;
mod proxy;
mod quirks;
mod robustness;
mod tokens;
mod verification;
mod webhooks;
