//! End-to-end: the real `tether` server process, real `tether-agent`
//! processes, the real admin CLI, over HTTPS on 127.0.0.1, on SQLite and on
//! PostgreSQL (a fresh database per test on the local server).

mod acme;
mod approval;
mod audit;
mod backup;
mod capture;
mod clidoc;
mod deb;
mod defs;
mod deploy;
mod dispatch;
mod doctor;
mod doctor_defs;
mod fleet;
mod hardening;
mod lab;
mod lifecycle;
mod offline;
mod openapi;
mod proxy;
mod quickstart;
mod renewal;
mod rolling;
mod scaleout;
mod scan;
mod shared_defs;
mod task_wakeups;
mod tasks;
mod upgrade;
