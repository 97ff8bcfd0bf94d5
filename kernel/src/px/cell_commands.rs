//! The evcxr commands a `%px` cell may hold, split from its Rust code.
//!
//! Engines have no evcxr of their own: the px compiler holds one state per group of engines,
//! so the commands that act on a compiler state or on how cells are reported make sense per
//! group: `:dep` (a crate for the group's cells), `:opt` (how the group's cells are built),
//! `:vars` (the group's variables) and `:timing` (compile and run times of later cells). Other
//! commands act on the kernel's own context and are refused with a pointer to a plain cell.

/// What `:opt` asks of a group's build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptRequest {
    /// `:opt` alone: 0 if the group builds at 2, else 2 (as evcxr's `:opt`).
    Toggle,
    /// `:opt LEVEL`: one of cargo's opt-levels.
    Set(String),
}

/// A `%px` cell taken apart.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellCommands {
    /// The Rust code, command lines removed.
    pub code: String,
    /// `:dep NAME [= CONFIG]` lines, as (name, config).
    pub deps: Vec<(String, String)>,
    /// The last `:opt` line, if any.
    pub opt: Option<OptRequest>,
    /// How many `:timing` lines (each toggles).
    pub timing_toggles: usize,
    /// Whether `:vars` asks for the groups' variables after the cell.
    pub vars: bool,
}

/// cargo's `opt-level` values.
const OPT_LEVELS: [&str; 6] = ["0", "1", "2", "3", "s", "z"];

/// Splits a `%px` cell's command lines from its Rust code, or says which line is not allowed.
pub fn split(cell: &str) -> Result<CellCommands, String> {
    let mut commands = CellCommands::default();
    let mut rust = Vec::new();
    for line in cell.lines() {
        let trimmed = line.trim();
        if !trimmed.starts_with(':') {
            rust.push(line);
            continue;
        }
        let (name, args) = match trimmed.split_once(char::is_whitespace) {
            Some((name, args)) => (name, args.trim()),
            None => (trimmed, ""),
        };
        match name {
            ":dep" if !args.is_empty() => {
                let (name, config) = match args.split_once('=') {
                    Some((name, config)) => (name.trim().to_owned(), config.trim().to_owned()),
                    None => (args.to_owned(), "\"*\"".to_owned()),
                };
                commands.deps.push((name, config));
            }
            ":dep" => return Err("`:dep` needs a crate, e.g. `:dep itoa = \"1\"`".into()),
            ":opt" if args.is_empty() => commands.opt = Some(OptRequest::Toggle),
            ":opt" if OPT_LEVELS.contains(&args) => {
                commands.opt = Some(OptRequest::Set(args.to_owned()));
            }
            ":opt" => {
                return Err(format!(
                    "`{trimmed}`: the optimization level is one of 0, 1, 2, 3, s, z (or `:opt` alone to switch between 0 and 2)"
                ))
            }
            ":timing" if args.is_empty() => commands.timing_toggles += 1,
            ":vars" if args.is_empty() => commands.vars = true,
            ":timing" | ":vars" => return Err(format!("`{trimmed}` takes no arguments")),
            _ => {
                return Err(format!(
                    "`{trimmed}`: %px cells take the evcxr commands :dep, :opt, :timing and :vars; other evcxr commands act on the kernel's own context, so run them in a plain cell"
                ))
            }
        }
    }
    commands.code = rust.join("\n");
    Ok(commands)
}

/// The level a group builds at after `request`, from the level it builds at now.
pub fn next_opt_level(request: &OptRequest, current: &str) -> String {
    match request {
        OptRequest::Set(level) => level.clone(),
        OptRequest::Toggle if current == "2" => "0".to_owned(),
        OptRequest::Toggle => "2".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_from_code() {
        let cell =
            split(":dep itoa = \"1\"\n:dep rand\n:opt 0\n:timing\n:vars\nlet x = 1;").unwrap();
        assert_eq!(cell.code, "let x = 1;");
        assert_eq!(
            cell.deps,
            vec![
                ("itoa".to_owned(), "\"1\"".to_owned()),
                ("rand".to_owned(), "\"*\"".to_owned())
            ]
        );
        assert_eq!(cell.opt, Some(OptRequest::Set("0".into())));
        assert_eq!(cell.timing_toggles, 1);
        assert!(cell.vars);
        assert_eq!(split(":opt").unwrap().opt, Some(OptRequest::Toggle));
    }

    #[test]
    fn other_commands_and_bad_arguments_are_refused_by_name() {
        assert!(split(":type x")
            .unwrap_err()
            .contains(":dep, :opt, :timing and :vars"));
        assert!(split(":opt fast").unwrap_err().contains("0, 1, 2, 3, s, z"));
        assert!(split(":vars x").unwrap_err().contains("takes no arguments"));
        assert!(split(":dep").unwrap_err().contains("needs a crate"));
    }

    #[test]
    fn opt_toggles_between_0_and_2() {
        assert_eq!(next_opt_level(&OptRequest::Toggle, "2"), "0");
        assert_eq!(next_opt_level(&OptRequest::Toggle, "0"), "2");
        assert_eq!(next_opt_level(&OptRequest::Toggle, "s"), "2");
        assert_eq!(next_opt_level(&OptRequest::Set("3".into()), "2"), "3");
    }
}
