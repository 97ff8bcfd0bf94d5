//! The files a data magic's engine cell reads and writes, named per engine.
//!
//! Data magics move values as files in the kernel's transfer directory. Paths may name the
//! engine as `{engine}` (scatter and gather have one file per engine); an engine on another
//! host gets its inputs in the run request and sends its outputs back in the reply, at the same
//! paths. Reading and writing them is the kernel's job; this is only the naming.

use crate::EngineId;

/// The placeholder for the engine id in a path.
pub const ENGINE: &str = "{engine}";

/// Input and output files of one cell's engine side, as path patterns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellFiles {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

impl CellFiles {
    /// The input and output paths of engine `id`.
    pub fn for_engine(&self, id: EngineId) -> (Vec<String>, Vec<String>) {
        let fill = |patterns: &[String]| -> Vec<String> {
            patterns
                .iter()
                .map(|p| p.replace(ENGINE, &id.to_string()))
                .collect()
        };
        (fill(&self.inputs), fill(&self.outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_name_each_engines_files() {
        let files = CellFiles {
            inputs: vec!["/d/x.scatter.{engine}.bin".into(), "/d/y.push.bin".into()],
            outputs: vec!["/d/z.gather.{engine}.bin".into()],
        };
        let (inputs, outputs) = files.for_engine(3);
        assert_eq!(inputs, ["/d/x.scatter.3.bin", "/d/y.push.bin"]);
        assert_eq!(outputs, ["/d/z.gather.3.bin"]);
    }
}
