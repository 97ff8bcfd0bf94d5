use super::*;
use crate::targets::{self, Targets};

/// The usage error `cell` must give.
fn usage(cell: &str) -> String {
    parse_cell(cell).expect_err(cell).0
}

fn px(cell: &str) -> PxOptions {
    match parse_cell(cell).unwrap().unwrap() {
        Magic::Px { options, .. } => options,
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_rust_is_not_a_magic() {
    assert_eq!(parse_cell("let x = 1;").unwrap(), None);
    assert_eq!(parse_cell(":dep rand").unwrap(), None);
}

#[test]
fn line_px_takes_the_whole_line_as_code() {
    let magic = parse_cell("%px let a = -t;").unwrap().unwrap();
    assert_eq!(
        magic,
        Magic::Px {
            options: PxOptions::default(),
            code: "let a = -t;".into()
        }
    );
    assert!(parse_cell("%px").is_err());
}

#[test]
fn cell_px_options() {
    let o = px("%%px -t 0,1 -a --no-stream -e -o res --progress-after 0 --signal-on-interrupt SIGTERM\ncode");
    assert_eq!(o.exec.targets, Some(Targets::List(vec![0, 1])));
    assert_eq!(o.exec.block, Some(false));
    assert_eq!(o.exec.stream, Some(false));
    assert_eq!(o.group_outputs, Some(Grouping::Engine));
    assert_eq!(o.out.as_deref(), Some("res"));
    assert_eq!(o.exec.progress_after, Some(0.0));
    assert_eq!(o.exec.signal_on_interrupt, Some(15));
    assert_eq!(
        px("%%px --targets=::2\nx")
            .exec
            .targets
            .unwrap()
            .to_string(),
        "::2"
    );
    assert_eq!(
        px("%%px --progress-after -1\nx").exec.progress_after,
        Some(-1.0)
    );
    assert_eq!(
        px("%%px -r --local --verbose\nx").group_outputs,
        Some(Grouping::Order)
    );
}

#[test]
fn usage_errors_name_the_option_and_the_choices() {
    assert_eq!(
        usage("%%px --group-outputs bogus\nx"),
        "argument --group-outputs: invalid choice: 'bogus' (choose from 'engine', 'order', 'type')"
    );
    assert_eq!(
        usage("%%px -t\nx"),
        "argument -t/--targets: expected one argument"
    );
    assert_eq!(usage("%%px --bogus\nx"), "unrecognized arguments: --bogus");
    assert!(usage("%px %%px\n").contains("is a magic"));
    assert!(usage("%%px -t 0\n\n  %pxresult").contains("`%pxresult` is a magic"));
    assert!(usage("%%px --signal-on-interrupt SIGFOO\nx").contains("--signal-on-interrupt"));
    assert!(usage("%nosuchmagic").contains("not found"));
    assert!(usage("%%px --progress-after soon\nx").contains("invalid float"));
}

#[test]
fn data_magics_and_pxmap_take_names_targets_and_their_options() {
    let map = parse_cell("%pxmap square xs -o ys --chunksize=10 --errors-in-place -t 0,1").unwrap();
    assert_eq!(
        map,
        Some(Magic::Map(MapOptions {
            function: "square".into(),
            input: "xs".into(),
            out: Some("ys".into()),
            chunk_size: Some(10),
            errors_in_place: true,
            targets: Some(targets::parse("0,1").unwrap()),
            noblock: false,
        }))
    );
    assert!(usage("%pxmap f").contains("takes a function and a local Vec"));
    assert!(usage("%pxmap a-b xs").contains("not a function name"));
    assert!(usage("%pxmap f xs --chunksize 0").contains("positive"));
    assert!(parse_cell("%pxmap m::f xs").is_ok());
    let push = parse_cell("%push a b,c -t 0,1").unwrap();
    assert_eq!(
        push,
        Some(Magic::Transfer(Transfer {
            kind: TransferKind::Push,
            names: vec!["a".into(), "b".into(), "c".into()],
            targets: Some(targets::parse("0,1").unwrap()),
            out: None,
        }))
    );
    let Some(Magic::Transfer(pull)) = parse_cell("%pull x -o xs").unwrap() else {
        panic!("not a transfer");
    };
    assert_eq!(
        (pull.kind, pull.out.as_deref()),
        (TransferKind::Pull, Some("xs"))
    );
    assert!(usage("%push").contains("needs a variable name"));
    assert!(usage("%pull a b").contains("one variable at a time"));
    assert!(usage("%scatter x -o y").contains("unrecognized"));
    assert!(usage("%gather 1x").contains("not a valid name"));
}

#[test]
fn pxresult_pxconfig_autopx_engines() {
    assert_eq!(
        parse_cell("%pxresult res -e --status").unwrap().unwrap(),
        Magic::PxResult(ResultOptions {
            name: Some("res".into()),
            group_outputs: Some(Grouping::Engine),
            out: None,
            status: true
        })
    );
    let Magic::PxConfig(c) = parse_cell("%pxconfig -t all --no-stream --progress-after 5")
        .unwrap()
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(c.exec.targets, Some(Targets::All));
    assert_eq!(c.exec.stream, Some(false));
    assert_eq!(c.restart_dead, None);
    assert!(parse_cell("%pxconfig --local").is_err());
    assert_eq!(parse_cell("%autopx").unwrap().unwrap(), Magic::AutoPx);
    assert_eq!(
        parse_cell("%engines").unwrap().unwrap(),
        Magic::Engines(EnginesCommand::List)
    );
    assert_eq!(
        parse_cell("%engines start -n 3").unwrap().unwrap(),
        Magic::Engines(EnginesCommand::Start {
            n: Some(3),
            launch: Box::default(),
            print: false
        })
    );
    assert_eq!(
        parse_cell("%engines stop 1,2").unwrap().unwrap(),
        Magic::Engines(EnginesCommand::Stop {
            ids: Some(vec![1, 2])
        })
    );
    assert_eq!(
        parse_cell("%engines restart 2").unwrap().unwrap(),
        Magic::Engines(EnginesCommand::Restart { ids: vec![2] })
    );
    assert!(parse_cell("%engines restart").is_err());
    assert!(parse_cell("%engines start -n 0").is_err());
}

#[test]
fn engines_start_takes_a_launcher_and_its_options() {
    let parsed = parse_cell(
        "%engines start --launcher ssh --hosts 10.0.0.2:2,b --launcher-arg -i --launcher-arg '/k/id key' --engine /opt/e --print",
    )
    .unwrap()
    .unwrap();
    let Magic::Engines(EnginesCommand::Start { n, launch, print }) = parsed else {
        panic!("not a start: {parsed:?}");
    };
    assert_eq!(n, None);
    assert!(print);
    assert_eq!(launch.launcher.as_deref(), Some("ssh"));
    assert_eq!(launch.hosts, vec![("10.0.0.2".into(), 2), ("b".into(), 1)]);
    assert_eq!(launch.launcher_args, vec!["-i", "/k/id key"]);
    assert_eq!(launch.engine.as_deref(), Some("/opt/e"));
    let unknown = parse_cell("%engines start --launcher pbs")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("unknown launcher 'pbs'"), "{unknown}");
    let both = parse_cell("%engines start -n 2 --launcher ssh --hosts a:2")
        .unwrap_err()
        .to_string();
    assert!(both.contains("--hosts HOST:N only"), "{both}");
    let no_hosts = parse_cell("%engines start --launcher ssh")
        .unwrap_err()
        .to_string();
    assert!(no_hosts.contains("needs --hosts"), "{no_hosts}");
}

#[test]
fn a_submitted_job_takes_its_queue_time_resources_and_template() {
    let cell = "%engines start --launcher slurm --submit -n 4 --queue short --time 01:00:00 --resource --mem=4G --resource --gres=gpu:1 --template ~/job.sh --launcher-arg --account=x";
    let Some(Magic::Engines(EnginesCommand::Start { n, launch, .. })) = parse_cell(cell).unwrap()
    else {
        panic!("not a start");
    };
    assert_eq!(n, Some(4));
    assert!(launch.submit);
    assert_eq!(launch.queue.as_deref(), Some("short"));
    assert_eq!(launch.time.as_deref(), Some("01:00:00"));
    assert_eq!(launch.resources, ["--mem=4G", "--gres=gpu:1"]);
    assert_eq!(launch.template.as_deref(), Some("~/job.sh"));
    assert_eq!(launch.launcher_args, ["--account=x"]);
}

#[test]
fn quoting_groups_arguments() {
    assert_eq!(split_args("a 'b c' \"d\"").unwrap(), vec!["a", "b c", "d"]);
    assert!(split_args("'open").is_err());
}

#[test]
fn arguments_split_as_a_shell_splits_them() {
    let cell = r#"%engines start --launcher ssh --hosts a:1 --launcher-arg "-o Opt=a b" --engine-arg 'it''s' --engine-arg x\ y"#;
    let Some(Magic::Engines(EnginesCommand::Start { launch, .. })) = parse_cell(cell).unwrap()
    else {
        panic!("not a start: {cell}");
    };
    assert_eq!(launch.launcher_args, ["-o Opt=a b"]);
    assert_eq!(launch.engine_args, ["its", "x y"]);
    assert_eq!(
        usage("%pxresult 'x"),
        "unterminated quote (or a trailing backslash) in the magic's arguments"
    );
}

/// Every text a bad argument can give, exactly: they imitate argparse, and users (and the Python
/// tests) know them.
#[test]
fn usage_errors_keep_their_argparse_texts() {
    let start = |text: &str| {
        format!(
            "{text}\nusage: %engines [list] | start [-n N] | stop [IDS] | restart IDS\n{}",
            engines::START_USAGE
        )
    };
    let expected_one = |option: &str| format!("argument {option}: expected one argument");
    let cases = [
        ("%%px -t\nx", expected_one("-t/--targets")),
        ("%%px -t --block\nx", expected_one("-t/--targets")),
        ("%%px --targets --frobnicate\nx", expected_one("-t/--targets")),
        ("%%px --group-outputs\nx", expected_one("--group-outputs")),
        ("%%px -o -x\nx", expected_one("-o/--out")),
        ("%%px --progress-after -inf -t\nx", expected_one("-t/--targets")),
        ("%pxconfig --progress-after", expected_one("--progress-after")),
        ("%pxconfig --signal-on-interrupt", expected_one("--signal-on-interrupt")),
        ("%pxresult --out", expected_one("-o/--out")),
        ("%pull x -o", expected_one("-o/--out")),
        ("%pxmap f xs --chunksize", expected_one("--chunksize")),
        ("%engines start -n", start(&expected_one("-n"))),
        ("%engines start --n --print", start(&expected_one("-n"))),
        ("%engines start --launcher-arg", start(&expected_one("--launcher-arg"))),
        (
            "%%px --group-outputs=bogus\nx",
            "argument --group-outputs: invalid choice: 'bogus' (choose from 'engine', 'order', 'type')".into(),
        ),
        ("%%px --progress-after soon\nx", "argument --progress-after: invalid float value: 'soon'".into()),
        (
            "%pxconfig --signal-on-interrupt SIGFOO",
            "argument --signal-on-interrupt: invalid signal 'SIGFOO' (use a name like SIGINT, a number, or 0 for none)".into(),
        ),
        ("%%px -t 1:2:0\nx", "argument -t/--targets: slice step cannot be zero".into()),
        (
            "%push x -t some",
            "argument -t/--targets: invalid targets \"some\" (use all, an id like 1, a list like 0,2 or [0,2], or a slice like ::2)".into(),
        ),
        ("%%px -o 1x\nx", "argument -o/--out: '1x' is not a valid name (letters, digits and _)".into()),
        ("%%px --out=-x\nx", "argument -o/--out: '-x' is not a valid name (letters, digits and _)".into()),
        ("%pxresult 1x", "argument NAME: '1x' is not a valid name (letters, digits and _)".into()),
        ("%pxresult 1x b", "argument NAME: '1x' is not a valid name (letters, digits and _)".into()),
        ("%push a 9lives,b", "argument NAME: '9lives' is not a valid name (letters, digits and _)".into()),
        ("%pxmap f xs --chunksize 0", "argument --chunksize: '0' is not a positive number of items".into()),
        ("%pxmap f 1x", "argument INPUT: '1x' is not a valid name (letters, digits and _)".into()),
        ("%engines start -n x", start("argument -n: invalid int value: 'x'")),
        ("%engines start -n 0", start("argument -n: start at least 1 engine")),
        (
            "%engines start -n 65537",
            start("argument -n: 65537 engines is more than one start may ask for (65536); start them in several steps"),
        ),
        (
            "%engines start --launcher ssh --hosts a:0",
            start("--hosts: 'a:0' needs a positive engine count after the colon (host:n)"),
        ),
        // Words argparse refuses, with the whole word.
        ("%%px --frobnicate=1\nx", "unrecognized arguments: --frobnicate=1".into()),
        ("%%px -t1\nx", "unrecognized arguments: -t1".into()),
        ("%%px -t=1\nx", "unrecognized arguments: -t=1".into()),
        ("%%px -ab\nx", "unrecognized arguments: -ab".into()),
        ("%%px -- -t 1\nx", "unrecognized arguments: --".into()),
        ("%%px -h\nx", "unrecognized arguments: -h".into()),
        ("%%px code\nx", "unrecognized arguments: code".into()),
        ("%%px ''\nx", "unrecognized arguments: ".into()),
        ("%pxconfig -e", "unrecognized arguments: -e".into()),
        ("%pxconfig --local", "unrecognized arguments: --local".into()),
        ("%pxresult a b", "unrecognized arguments: b".into()),
        ("%pxresult -", "unrecognized arguments: -".into()),
        ("%push a -o b", "unrecognized arguments: -o".into()),
        ("%pxmap f -5 xs", "unrecognized arguments: -5".into()),
        ("%engines start --print=x --frob", start("unrecognized arguments: --frob")),
        // The first bad word is the one reported.
        (
            "%%px --group-outputs bogus --frobnicate\nx",
            "argument --group-outputs: invalid choice: 'bogus' (choose from 'engine', 'order', 'type')".into(),
        ),
        ("%pxresult a b --group-outputs bogus", "unrecognized arguments: b".into()),
        ("%push 1x -t some", "argument NAME: '1x' is not a valid name (letters, digits and _)".into()),
        ("%engines start -n 0 --hosts a:0", start("argument -n: start at least 1 engine")),
    ];
    for (cell, text) in cases {
        assert_eq!(usage(cell), text, "{cell}");
    }
}

/// The spellings rustpx has always taken: `--opt=value` and `-o value` (not `-ovalue`), a
/// number that starts with `-` as a value, the last of repeated or opposite options.
#[test]
fn option_spellings_and_the_last_one_given_wins() {
    let exec = |cell: &str| px(&format!("%%px {cell}\nx")).exec;
    assert_eq!(exec("-t 1").targets, exec("--targets=1").targets);
    assert_eq!(exec("-t 0 --targets 1").targets, Some(Targets::Single(1)));
    assert_eq!(
        exec("--progress-after=-inf").progress_after,
        Some(f64::NEG_INFINITY)
    );
    assert_eq!(exec("--progress-after -.5").progress_after, Some(-0.5));
    assert_eq!(exec("-b -a").block, Some(false));
    assert_eq!(exec("--noblock --block").block, Some(true));
    assert_eq!(exec("--block=no").block, Some(true));
    assert_eq!(exec("--no-stream --stream --no-verbose").stream, Some(true));
    assert_eq!(exec("--verbose --no-verbose").verbose, Some(false));
    let grouping = |cell: &str| px(&format!("%%px {cell}\nx")).group_outputs;
    assert_eq!(grouping("-e --group-outputs order"), Some(Grouping::Order));
    assert_eq!(grouping("--group-outputs type -e"), Some(Grouping::Engine));
    assert_eq!(grouping("-r -e"), Some(Grouping::Engine));
    assert_eq!(grouping("-e -r"), Some(Grouping::Order));
    assert_eq!(grouping("--local"), None);
    let Some(Magic::Transfer(push)) = parse_cell("%push a -t 0 b,c -t 1").unwrap() else {
        panic!("not a transfer");
    };
    assert_eq!(
        (push.names.len(), push.targets),
        (3, Some(Targets::Single(1)))
    );
    let cell = "%engines start --launcher ssh --hosts a:1 --hosts=b:2 --launcher-arg -i --launcher-arg=--x --engine-arg --";
    let Some(Magic::Engines(EnginesCommand::Start { launch, .. })) = parse_cell(cell).unwrap()
    else {
        panic!("not a start: {cell}");
    };
    assert_eq!(launch.hosts, [("b".to_owned(), 2)]);
    assert_eq!(launch.launcher_args, ["-i", "--x"]);
    assert_eq!(launch.engine_args, ["--"]);
    let Some(Magic::Engines(EnginesCommand::Start { n, .. })) =
        parse_cell("%engines start --n 2 -n 3").unwrap()
    else {
        panic!("not a start");
    };
    assert_eq!(n, Some(3));
    assert!(usage("%engines start -n=3").starts_with("unrecognized arguments: -n=3\n"));
}

fn pxconfig(cell: &str) -> PxConfigOptions {
    match parse_cell(cell).unwrap().unwrap() {
        Magic::PxConfig(options) => options,
        other => panic!("{other:?}"),
    }
}

#[test]
fn timeout_is_an_exec_option_of_px_and_pxconfig() {
    assert_eq!(px("%%px --timeout 2\nloop {}").exec.timeout, Some(2.0));
    assert_eq!(px("%%px --timeout=0.5 -t 1\nx").exec.timeout, Some(0.5));
    assert_eq!(pxconfig("%pxconfig --timeout 30").exec.timeout, Some(30.0));
    assert_eq!(pxconfig("%pxconfig --timeout 0").exec.timeout, Some(0.0));
    assert_eq!(
        usage("%%px --timeout soon\nx"),
        "argument --timeout: invalid float value: 'soon'"
    );
    assert!(usage("%%px --timeout -1\nx").contains("positive number, or 0 for no limit"));
    assert_eq!(
        usage("%%px --timeout\nx"),
        "argument --timeout: expected one argument"
    );
}

#[test]
fn restart_dead_takes_an_optional_limit() {
    assert_eq!(
        pxconfig("%pxconfig --restart-dead").restart_dead,
        Some(DEFAULT_RESTART_LIMIT)
    );
    assert_eq!(pxconfig("%pxconfig --restart-dead 5").restart_dead, Some(5));
    assert_eq!(pxconfig("%pxconfig --restart-dead=0").restart_dead, Some(0));
    let both = pxconfig("%pxconfig --restart-dead --timeout 10");
    assert_eq!(both.restart_dead, Some(DEFAULT_RESTART_LIMIT));
    assert_eq!(both.exec.timeout, Some(10.0));
    assert!(usage("%pxconfig --restart-dead many").contains("0 turns restarting off"));
    assert!(usage("%pxconfig --restart-dead 5000").contains("0 to 1000"));
    // A per-cell option only: the policy belongs to the pool.
    assert_eq!(
        usage("%%px --restart-dead\nx"),
        "unrecognized arguments: --restart-dead"
    );
}

#[test]
fn cells_that_want_engine_code_are_told_apart() {
    let wants = |cell: &str| {
        parse_cell(cell)
            .ok()
            .flatten()
            .is_some_and(|m| m.wants_engine_code())
    };
    for cell in [
        "%px 1",
        "%%px -t 0\nlet x = 1;",
        "%autopx",
        "%engines start -n 2",
        "%pxmap square xs",
    ] {
        assert!(wants(cell), "{cell}");
    }
    for cell in [
        "1 + 1",
        "%engines",
        "%engines stop",
        "%pxresult",
        "%pxconfig --targets 0",
    ] {
        assert!(!wants(cell), "{cell}");
    }
}
