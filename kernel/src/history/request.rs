//! A `history_request`'s content, read leniently (clients send only the fields their access type
//! needs, and `null` for the rest), and the `history` list of its reply.
//!
//! Defaults are IPython's: `raw` and `output` false, a range of the current session from line 0
//! to its end, a tail of 10, a search of `*` over everything.

use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use super::store::{Entry, Selection};

/// The tail length when a client does not say (IPython's default).
const DEFAULT_TAIL: i64 = 10;

/// What a `history_request` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The entries, with `Range`'s session still relative when zero or negative.
    pub selection: Selection,
    /// Whether the reply pairs each input with its output.
    pub output: bool,
}

/// Why a `history_request` cannot be answered.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    #[error(
        "history_request: {0}; see the History section of the Jupyter messaging spec \
         (hist_access_type \"tail\" with n, \"range\" with session, start, stop, or \"search\" \
         with pattern, n, unique)"
    )]
    Fields(String),
    #[error(
        "history_request: hist_access_type {0:?} is not one of \"tail\", \"range\", \"search\""
    )]
    AccessType(String),
    #[error(
        "history_request: hist_access_type is missing; send \"tail\", \"range\" or \"search\""
    )]
    NoAccessType,
}

/// The fields of the spec. `raw` is not read: rustpx does not transform input (what was typed,
/// magics included, is what ran), so raw and transformed history are the same.
#[derive(Deserialize)]
struct Fields {
    hist_access_type: Option<String>,
    output: Option<bool>,
    session: Option<i64>,
    start: Option<i64>,
    stop: Option<i64>,
    n: Option<i64>,
    pattern: Option<String>,
    unique: Option<bool>,
}

impl HistoryQuery {
    /// Reads a request's content.
    pub fn parse(content: &Value) -> Result<HistoryQuery, RequestError> {
        let fields = Fields::deserialize(content)
            .map_err(|error| RequestError::Fields(error.to_string()))?;
        let selection = match fields.hist_access_type.as_deref() {
            None => return Err(RequestError::NoAccessType),
            Some("tail") => Selection::Tail {
                n: fields.n.unwrap_or(DEFAULT_TAIL),
            },
            Some("range") => Selection::Range {
                session: fields.session.unwrap_or(0),
                start: fields.start.unwrap_or(0),
                stop: fields.stop,
            },
            Some("search") => Selection::Search {
                pattern: fields.pattern.unwrap_or_else(|| "*".into()),
                n: fields.n,
                unique: fields.unique.unwrap_or(false),
            },
            Some(other) => return Err(RequestError::AccessType(other.into())),
        };
        Ok(HistoryQuery {
            selection,
            output: fields.output.unwrap_or(false),
        })
    }

    /// The selection with a relative range session (0 this one, -1 the one before) made
    /// absolute against `current`.
    pub fn resolve(&self, current: i64) -> Selection {
        match &self.selection {
            Selection::Range {
                session,
                start,
                stop,
            } if *session <= 0 => Selection::Range {
                session: current + session,
                start: *start,
                stop: *stop,
            },
            other => other.clone(),
        }
    }
}

/// The reply's `history`: `[session, line, input]` triples, or `[session, line, [input,
/// output]]` when outputs were asked for (outputs are not kept, so `null`).
pub fn history_list(entries: &[Entry], output: bool) -> Value {
    let list = entries
        .iter()
        .map(|entry| {
            if output {
                json!([entry.session, entry.line, [entry.source, null]])
            } else {
                json!([entry.session, entry.line, entry.source])
            }
        })
        .collect();
    Value::Array(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(content: Value) -> Result<HistoryQuery, RequestError> {
        HistoryQuery::parse(&content)
    }

    #[test]
    fn jupyter_clients_default_request_is_the_whole_current_session() {
        let query = parse(json!({"raw": true, "output": false, "hist_access_type": "range"}));
        assert_eq!(
            query.unwrap().resolve(7),
            Selection::Range {
                session: 7,
                start: 0,
                stop: None
            }
        );
    }

    #[test]
    fn a_negative_session_counts_back_from_the_current_one() {
        let query =
            parse(json!({"hist_access_type": "range", "session": -1, "start": 1, "stop": 3}));
        assert_eq!(
            query.unwrap().resolve(7),
            Selection::Range {
                session: 6,
                start: 1,
                stop: Some(3)
            }
        );
    }

    #[test]
    fn nulls_and_unknown_fields_are_defaults() {
        // What jupyter_console sends for a search.
        let query = parse(
            json!({"hist_access_type": "search", "pattern": "let*", "n": null,
                                 "unique": false, "search_raw": true, "output": false}),
        );
        assert_eq!(
            query.unwrap().selection,
            Selection::Search {
                pattern: "let*".into(),
                n: None,
                unique: false
            }
        );
    }

    #[test]
    fn jupyterlab_consoles_tail_request() {
        let query =
            parse(json!({"output": false, "raw": true, "hist_access_type": "tail", "n": 500}));
        assert_eq!(query.unwrap().selection, Selection::Tail { n: 500 });
    }

    #[test]
    fn a_wrong_type_or_access_type_is_named() {
        let error = parse(json!({"hist_access_type": "tail", "n": "ten"})).unwrap_err();
        assert!(
            error.to_string().contains("invalid type: string \"ten\""),
            "{error}"
        );
        let error = parse(json!({"hist_access_type": "latest"})).unwrap_err();
        assert_eq!(error, RequestError::AccessType("latest".into()));
        assert_eq!(
            parse(json!({"n": 3})).unwrap_err(),
            RequestError::NoAccessType
        );
        assert!(parse(json!([1, 2])).is_err());
    }

    #[test]
    fn outputs_pair_with_their_input() {
        let entries = [Entry {
            session: 3,
            line: 1,
            source: "1 + 1".into(),
        }];
        assert_eq!(history_list(&entries, false), json!([[3, 1, "1 + 1"]]));
        assert_eq!(
            history_list(&entries, true),
            json!([[3, 1, ["1 + 1", null]]])
        );
    }
}
