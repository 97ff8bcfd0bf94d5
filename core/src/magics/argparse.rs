//! Runs a magic's clap argument struct with the word rules and error texts rustpx's magics have
//! always had: argparse's texts, as ipyparallel's magics show them, and argparse's way of pairing
//! an option with its value, without its `-t1`, `-ab` and `--`.
//!
//! Left to itself clap would take `-t1`, `-ab` and `--`, refuse `--flag=x` (read as `--flag`
//! here), guess by rules of its own whether a word that starts with `-` is an option's value, and
//! drop a positional's value error when an extra word follows. So [`words_for_clap`] first pairs
//! each option with its value, refusing the words rustpx refuses with the texts it always gave,
//! and gives clap one `NAME=VALUE` word per option: clap matches names to fields, runs the value
//! parsers in word order, and lets the last of repeated or opposite options win.

use std::error::Error as _;

use clap::{Arg, Args, Command, FromArgMatches};

use super::{unrecognized, UsageError};

/// Parses the words of a magic into its argument struct `T`.
pub(super) fn parse<T: Args + FromArgMatches>(items: &[String]) -> Result<T, UsageError> {
    let mut command = T::augment_args(Command::new("magic"))
        .no_binary_name(true)
        .disable_help_flag(true)
        .args_override_self(true);
    command.build();
    let mut words = Vec::with_capacity(items.len());
    let refused = words_for_clap(&command, items, &mut words).err();
    // The words before a refused one still go to clap: an error among them came first.
    let parsed = command
        .try_get_matches_from_mut(words)
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches))
        .map_err(usage_error)?;
    refused.map_or(Ok(parsed), Err)
}

/// Puts the words as clap should see them into `words`, up to the first word argparse would
/// refuse, and fails with argparse's error for that word.
fn words_for_clap(
    command: &Command,
    items: &[String],
    words: &mut Vec<String>,
) -> Result<(), UsageError> {
    let room = command
        .get_positionals()
        .map(|arg| arg.get_num_args().map_or(1, |n| n.max_values()))
        .fold(0, usize::saturating_add);
    let (mut items, mut positionals) = (items.iter().peekable(), 0);
    while let Some(item) = items.next() {
        if !item.starts_with('-') {
            positionals += 1;
            if positionals > room {
                return Err(unrecognized(item));
            }
            words.push(item.clone());
            continue;
        }
        let (name, inline) = match item.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (item.as_str(), None),
        };
        let arg = option(command, name).ok_or_else(|| unrecognized(item))?;
        if !arg.get_action().takes_values() {
            words.push(name.to_owned());
            continue;
        }
        // An option whose value may be left out (argparse's `nargs='?'`) takes the next word
        // only when it can be a value.
        let optional = arg.get_num_args().is_some_and(|n| n.min_values() == 0);
        if optional
            && inline.is_none()
            && items.peek().is_none_or(|next| looks_like_an_option(next))
        {
            words.push(name.to_owned());
            continue;
        }
        // Else the next word, unless it looks like an option (`--launcher-arg` takes any word).
        let value = inline.or_else(|| {
            let next = items.next()?;
            (arg.is_allow_hyphen_values_set() || !looks_like_an_option(next)).then_some(next)
        });
        let Some(value) = value else {
            return Err(expected_one_argument(arg));
        };
        words.push(format!("{name}={value}"));
    }
    Ok(())
}

/// The option `name` (`-t`, `--targets` or a hidden alias like `--n`) stands for.
fn option<'c>(command: &'c Command, name: &str) -> Option<&'c Arg> {
    command
        .get_arguments()
        .find(|arg| match name.strip_prefix("--") {
            Some(long) => {
                arg.get_long() == Some(long)
                    || arg.get_all_aliases().is_some_and(|all| all.contains(&long))
            }
            None => arg.get_short().is_some_and(|c| name == format!("-{c}")),
        })
}

/// A word that cannot be an option's value: a dash and more, and not a number (argparse's test,
/// with Rust's idea of a number).
fn looks_like_an_option(word: &str) -> bool {
    word.starts_with('-') && word.len() > 1 && word.parse::<f64>().is_err()
}

/// argparse's error for an option without its value, naming the option as argparse does
/// (`-t/--targets`, `--chunksize`, `-n`).
fn expected_one_argument(arg: &Arg) -> UsageError {
    let short = arg.get_short().map(|c| format!("-{c}"));
    let long = arg.get_long().map(|long| format!("--{long}"));
    let name = short.into_iter().chain(long).collect::<Vec<_>>().join("/");
    UsageError(format!("argument {name}: expected one argument"))
}

/// A value parser's error is a whole argparse-style message already; clap's own errors cannot
/// happen on the words [`words_for_clap`] gives it.
fn usage_error(error: clap::Error) -> UsageError {
    UsageError(
        error
            .source()
            .map_or_else(|| error.kind().to_string(), ToString::to_string),
    )
}
