//! The command line, parsed by hand (no parser crate to compile).

use std::path::PathBuf;

use kalloc_benches::suite::{Config, Family};

/// What the user asked for.
#[derive(Debug)]
pub enum Command {
    /// Run the suite (the default).
    Run(RunArgs),
    /// Print workloads and allocators.
    List(Config),
    /// Replay a trace file on every heap.
    Replay { file: PathBuf, args: RunArgs },
    /// Convert a `valgrind --trace-malloc=yes` log into a trace.
    ConvertValgrind { log: PathBuf, out: Option<PathBuf> },
    /// Print the usage.
    Help,
}

/// Options of a run.
#[derive(Debug)]
pub struct RunArgs {
    pub config: Config,
    pub json: bool,
    pub out: PathBuf,
    pub report: bool,
}

pub const USAGE: &str = "\
kalloc-bench: kalloc's allocators side by side with peer crates

USAGE:
    kalloc-bench [OPTIONS]                 run the suite, print tables, write the report
    kalloc-bench replay FILE [OPTIONS]     replay a trace on every heap
    kalloc-bench convert-valgrind LOG [OUT]
                                           turn `valgrind --trace-malloc=yes` output into a trace

OPTIONS:
    --family F[,F..]     frames, objects, heaps, threads (default: all)
    --workload W[,W..]   workloads whose name contains W (also non-default ones; see --list)
    --allocator A[,A..]  allocators whose name contains A
    --threads N[,N..]    thread counts of the threads family (default: 1,2)
    --quick              fewer operations and batches, no 16 GiB runs (~20 s)
    --json               print the results as JSON on stdout instead of tables
    --list               list workloads and allocators, run nothing
    --out DIR            report folder (default: kalloc-report)
    --no-report          write no report folder
    --seed N             seed of every operation sequence
    -h, --help           this text

TRACE FORMAT (replay): one operation per line, `#` comments
    allocate ID SIZE ALIGN
    free ID
    realloc ID SIZE
";

fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter().peekable();
    let mut run = RunArgs {
        config: Config::full(),
        json: false,
        out: PathBuf::from("kalloc-report"),
        report: true,
    };
    let mut quick = false;
    let mut listing = false;
    let mut replay: Option<PathBuf> = None;
    // Options are applied after `--quick`, which resets the timing defaults.
    let mut families = Vec::new();
    let (mut workloads, mut allocators, mut threads, mut seed) =
        (Vec::new(), Vec::new(), None, None);
    match args.peek().map(String::as_str) {
        Some("replay") => {
            args.next();
            replay = Some(args.next().ok_or("replay needs a trace FILE")?.into());
        }
        Some("convert-valgrind") => {
            args.next();
            let log = args
                .next()
                .ok_or("convert-valgrind needs a LOG file")?
                .into();
            return Ok(Command::ConvertValgrind {
                log,
                out: args.next().map(PathBuf::from),
            });
        }
        _ => {}
    }
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--family" => {
                for name in list(&value()?) {
                    families.push(Family::parse(&name).ok_or(format!("unknown family `{name}`"))?);
                }
            }
            "--workload" => workloads.extend(list(&value()?)),
            "--allocator" => allocators.extend(list(&value()?)),
            "--threads" => {
                let counts: Result<Vec<usize>, _> =
                    list(&value()?).iter().map(|n| n.parse::<usize>()).collect();
                let counts =
                    counts.map_err(|_| "--threads takes numbers, like 1,2,4".to_string())?;
                if counts.contains(&0) {
                    return Err("--threads counts start at 1".into());
                }
                threads = Some(counts);
            }
            "--seed" => {
                seed = Some(
                    value()?
                        .parse::<u64>()
                        .map_err(|_| "--seed takes a number")?,
                )
            }
            "--out" => run.out = value()?.into(),
            "--quick" => quick = true,
            "--json" => run.json = true,
            "--list" => listing = true,
            "--no-report" => run.report = false,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if quick {
        run.config = Config::quick();
    }
    run.config.families = families;
    run.config.workloads = workloads;
    run.config.allocators = allocators;
    if let Some(threads) = threads {
        run.config.threads = threads;
    }
    if let Some(seed) = seed {
        run.config.seed = seed;
    }
    Ok(match (listing, replay) {
        (true, _) => Command::List(run.config),
        (false, Some(file)) => Command::Replay { file, args: run },
        (false, None) => Command::Run(run),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn options_reach_the_config() {
        let Ok(Command::Run(run)) =
            parse_str("--quick --family frames,heaps --threads=1,4 --workload mix --out r")
        else {
            panic!("a run");
        };
        assert_eq!(run.config.families, [Family::Frames, Family::Heaps]);
        assert_eq!(run.config.threads, [1, 4]);
        assert_eq!(run.config.workloads, ["mix"]);
        assert_eq!(run.config.scale, kalloc_benches::suite::Scale::Quick);
        assert_eq!(run.out, PathBuf::from("r"));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse_str("--family nope").is_err());
        assert!(parse_str("--threads 0").is_err());
        assert!(parse_str("--threads").is_err());
        assert!(parse_str("--bogus").is_err());
        assert!(matches!(
            parse_str("replay t.txt --quick"),
            Ok(Command::Replay { .. })
        ));
        assert!(matches!(parse_str("--list"), Ok(Command::List(_))));
    }
}
