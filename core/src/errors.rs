//! Every failure a user sees, by kind, and the report Jupyter shows for it.
//!
//! A kind fixes the `ename` (the name before the colon in a traceback, what tests and users
//! match on), so no part of the kernel spells one by hand. The report is turned into Jupyter's
//! `error` message and `execute_reply` in one place each (the kernel's `iopub` and shell).

/// What kind of failure a report is; [`ErrorKind::ename`] is the name Jupyter shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A magic's arguments are wrong (`UsageError`, as IPython's magics).
    Usage,
    /// The kernel itself cannot do what was asked (a part is unavailable or stopped).
    Kernel,
    /// evcxr's context did not start (no toolchain, a broken `init.evcxr`).
    EvcxrStart,
    /// rustc refused the cell.
    Compilation,
    /// The cell panicked.
    Panic,
    /// An interrupt stopped the cell.
    KeyboardInterrupt,
    /// Engines still ran the cell when its `--timeout` passed, and were interrupted.
    Timeout,
    /// evcxr's child process ended while running the cell.
    SubprocessTerminated,
    /// Any other failure of a cell, with the text evcxr or the engine gave.
    Other,
    /// Engines could not be started or restarted.
    EngineStart,
    /// An engine was gone or died while it held the cell.
    Engine,
    /// A target names an engine that does not exist (`IndexError`, as ipyparallel).
    NoSuchEngine,
    /// A variable a magic needs does not exist.
    Name,
    /// A data magic failed.
    Transfer,
    /// Items of a `%pxmap` failed.
    Map,
    /// An engine could not load a compiled cell.
    Load,
    /// Several engines failed (ipyparallel's `CompositeError`).
    Composite,
    /// Shown for a result whose engines' errors were already displayed while it ran.
    AlreadyDisplayed,
}

impl ErrorKind {
    /// The name Jupyter shows: the `ename` of the error message and reply.
    pub fn ename(self) -> &'static str {
        match self {
            ErrorKind::Usage => "UsageError",
            ErrorKind::Kernel => "KernelError",
            ErrorKind::EvcxrStart => "EvcxrStartError",
            ErrorKind::Compilation => "CompilationError",
            ErrorKind::Panic => "Panic",
            ErrorKind::KeyboardInterrupt => "KeyboardInterrupt",
            ErrorKind::Timeout => "TimeoutError",
            ErrorKind::SubprocessTerminated => "SubprocessTerminated",
            ErrorKind::Other => "Error",
            ErrorKind::EngineStart => "EngineStartError",
            ErrorKind::Engine => "EngineError",
            ErrorKind::NoSuchEngine => "IndexError",
            ErrorKind::Name => "NameError",
            ErrorKind::Transfer => "TransferError",
            ErrorKind::Map => "MapError",
            ErrorKind::Load => "LoadError",
            ErrorKind::Composite => "CompositeError",
            ErrorKind::AlreadyDisplayed => "AlreadyDisplayedError",
        }
    }
}

/// An error as Jupyter shows it: its kind (hence its name), value and traceback lines.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorReport {
    pub kind: ErrorKind,
    pub evalue: String,
    pub traceback: Vec<String>,
    /// rustc's error codes when this is a compile error (`E0425`, ...): what the kernel reads
    /// to explain a failure, never the compiler's English text.
    pub codes: Vec<String>,
}

impl ErrorReport {
    /// A report of `kind` with no traceback lines.
    pub fn new(kind: ErrorKind, evalue: impl Into<String>) -> Self {
        ErrorReport {
            kind,
            evalue: evalue.into(),
            traceback: Vec::new(),
            codes: Vec::new(),
        }
    }

    /// A report whose traceback is its one line, `Ename: evalue`.
    pub fn headline(kind: ErrorKind, evalue: impl Into<String>) -> Self {
        let report = ErrorReport::new(kind, evalue);
        let line = report.summary();
        report.with_traceback(vec![line])
    }

    /// A usage error: `UsageError: ...`, as IPython shows a magic's.
    pub fn usage(message: impl Into<String>) -> Self {
        ErrorReport::headline(ErrorKind::Usage, message)
    }

    pub fn with_traceback(mut self, traceback: Vec<String>) -> Self {
        self.traceback = traceback;
        self
    }

    /// The name Jupyter shows.
    pub fn ename(&self) -> &'static str {
        self.kind.ename()
    }

    /// `Ename: evalue`.
    pub fn summary(&self) -> String {
        format!("{}: {}", self.ename(), self.evalue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_headline_report_shows_its_name_and_value() {
        let report = ErrorReport::headline(ErrorKind::NoSuchEngine, "No such engine: 9");
        assert_eq!(report.ename(), "IndexError");
        assert_eq!(report.traceback, ["IndexError: No such engine: 9"]);
        assert_eq!(ErrorReport::usage("bad").traceback, ["UsageError: bad"]);
    }
}
