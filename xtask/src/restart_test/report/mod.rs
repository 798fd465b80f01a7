//! What a run found: one [`ScenarioResult`] per scenario, as tables for a person
//! (`table.rs`) and as JSON for a program (`json.rs`).

pub(crate) mod json;
mod result;
mod table;

pub(crate) use result::ScenarioResult;
pub(crate) use table::{render, render_restarts};
