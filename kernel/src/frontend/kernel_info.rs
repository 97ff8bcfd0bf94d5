//! The kernel's self-description for `kernel_info_reply`.

use serde_json::{json, Value};

/// The content of `kernel_info_reply`.
pub fn content() -> Value {
    json!({
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "rustpx",
        "implementation_version": env!("CARGO_PKG_VERSION"),
        "language_info": {
            "name": "rust",
            "version": "",
            "mimetype": "text/rust",
            "file_extension": ".rs",
            "pygments_lexer": "rust",
            "codemirror_mode": "rust",
        },
        "banner": concat!(
            "rustpx ", env!("CARGO_PKG_VERSION"),
            ": Rust through evcxr, with ipyparallel's parallel magics (%px, %%px, %pxresult, %pxconfig, %autopx, %engines)"
        ),
        "help_links": [
            {"text": "evcxr commands (type :help in a cell)", "url": "https://github.com/evcxr/evcxr/blob/main/COMMON.md"},
            {"text": "ipyparallel magics", "url": "https://ipyparallel.readthedocs.io/en/latest/tutorial/magics.html"},
        ],
    })
}
