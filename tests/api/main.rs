//! Black-box API tests: each starts the real server on a random port with its own data
//! directory and talks HTTP to it. One test binary, so it links once.

mod access;
mod activities;
mod browser;
mod capture;
mod contract;
mod helpers;
mod leads;
mod nurture;
mod ops;
mod reports;
mod routing;
mod scoring;
mod search;
mod smoke;
mod smtp_sink;
mod tasks;
mod transfer;
mod users;

mod events;
mod webhooks;
