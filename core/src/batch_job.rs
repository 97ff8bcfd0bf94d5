//! The job script a batch launcher submits (`%engines start --launcher slurm --submit`,
//! `--launcher sge`), rendered from a template the user can replace.
//!
//! A template is a shell script with `{{name}}` placeholders (double braces, so that the shell's
//! own `${VAR}` and `$((…))` need no escaping). `{{directives}}` expands to the scheduler's
//! `#SBATCH` / `#$` lines made from the options (engine count, queue, time limit, extra
//! resources), so a custom template keeps the options working by keeping that one line; the other
//! placeholders give the same values one by one for templates that want to place them
//! themselves. The engine command names the connection file, never the key itself: the key stays
//! in a 0600 file and off every command line.
//!
//! Pure text: the kernel reads template files, writes the script and runs `sbatch` or `qsub`.

use thiserror::Error;

/// The batch systems rustpx submits to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheduler {
    /// Slurm: `sbatch`, `squeue`, `scancel`; the engines are the tasks of one `srun`.
    Slurm,
    /// Grid Engine: `qsub`, `qstat`, `qdel`; the engines are the tasks of one array job.
    GridEngine,
}

impl Scheduler {
    /// The launcher's name as users type it.
    pub fn launcher_name(self) -> &'static str {
        match self {
            Scheduler::Slurm => "slurm",
            Scheduler::GridEngine => "sge",
        }
    }

    /// The name of a job in messages: `slurm job 12`, `sge job 7`.
    pub fn job_label(self, job: &str) -> String {
        format!("{} job {job}", self.launcher_name())
    }

    /// The template used without `--template`.
    pub fn default_template(self) -> &'static str {
        match self {
            Scheduler::Slurm => SLURM_TEMPLATE,
            Scheduler::GridEngine => GRID_ENGINE_TEMPLATE,
        }
    }
}

/// Slurm: one task per engine; an engine that exits must not end the others.
const SLURM_TEMPLATE: &str = "\
#!/bin/sh
{{directives}}
# rustpx engines {{ids}}: engine id = {{id_base}} + $SLURM_PROCID
srun --kill-on-bad-exit=0 {{engine}} --id-base {{id_base}}
";

/// Grid Engine: one array task per engine (tasks count from 1).
const GRID_ENGINE_TEMPLATE: &str = "\
#!/bin/sh
{{directives}}
# rustpx engines {{ids}}: engine id = {{id_base}} + $SGE_TASK_ID - 1
exec {{engine}} --id $(({{id_base}} + SGE_TASK_ID - 1))
";

/// Everything a job script is made from.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub scheduler: Scheduler,
    /// Engine ids, consecutive from the first.
    pub ids: Vec<u32>,
    pub job_name: String,
    /// Where the scheduler writes the job's output (a directory: one file per task on SGE).
    pub output_dir: String,
    /// `--queue`: a Slurm partition or a Grid Engine queue.
    pub queue: Option<String>,
    /// `--time`: the job's wall-clock limit, as the scheduler writes it (`HH:MM:SS`).
    pub time: Option<String>,
    /// `--resource`: one more directive each, written as given after `#SBATCH ` or `#$ `.
    pub resources: Vec<String>,
    /// The engine command, shell-quoted, without its id option.
    pub engine: String,
}

/// A template that names something rustpx does not fill in, or does not close a placeholder.
#[derive(Debug, Clone, Error, PartialEq)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// The placeholders a template may use.
pub const PLACEHOLDERS: [&str; 9] = [
    "directives",
    "n",
    "ids",
    "id_base",
    "job_name",
    "queue",
    "time",
    "output_dir",
    "engine",
];

impl JobRequest {
    /// The scheduler's directive lines for these options.
    pub fn directives(&self) -> String {
        let n = self.ids.len();
        let mut lines = Vec::new();
        match self.scheduler {
            Scheduler::Slurm => {
                lines.push(format!("--job-name={}", self.job_name));
                lines.push(format!("--ntasks={n}"));
                lines.push(format!("--output={}/slurm-%j.out", self.output_dir));
                if let Some(queue) = &self.queue {
                    lines.push(format!("--partition={queue}"));
                }
                if let Some(time) = &self.time {
                    lines.push(format!("--time={time}"));
                }
            }
            Scheduler::GridEngine => {
                lines.push(format!("-N {}", self.job_name));
                lines.push("-S /bin/sh".into());
                lines.push(format!("-t 1-{n}"));
                lines.push("-j y".into());
                lines.push(format!("-o {}/", self.output_dir));
                if let Some(queue) = &self.queue {
                    lines.push(format!("-q {queue}"));
                }
                if let Some(time) = &self.time {
                    lines.push(format!("-l h_rt={time}"));
                }
            }
        }
        lines.extend(self.resources.iter().cloned());
        let prefix = match self.scheduler {
            Scheduler::Slurm => "#SBATCH ",
            Scheduler::GridEngine => "#$ ",
        };
        lines
            .iter()
            .map(|line| format!("{prefix}{line}"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn value(&self, name: &str) -> Option<String> {
        let first = self.ids.first().copied().unwrap_or(0);
        Some(match name {
            "directives" => self.directives(),
            "n" => self.ids.len().to_string(),
            "ids" => match self.ids.last() {
                Some(last) if *last != first => format!("{first}-{last}"),
                _ => first.to_string(),
            },
            "id_base" => first.to_string(),
            "job_name" => self.job_name.clone(),
            "queue" => self.queue.clone().unwrap_or_default(),
            "time" => self.time.clone().unwrap_or_default(),
            "output_dir" => self.output_dir.clone(),
            "engine" => self.engine.clone(),
            _ => return None,
        })
    }

    /// `template` with every `{{name}}` replaced.
    pub fn render(&self, template: &str) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(template.len() + 256);
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or_else(|| {
                TemplateError(format!(
                    "the job template opens a placeholder that it does not close: '{{{{{}': write {{{{name}}}} with one of {}",
                    after.lines().next().unwrap_or_default(),
                    PLACEHOLDERS.join(", ")
                ))
            })?;
            let name = after[..end].trim();
            let value = self.value(name).ok_or_else(|| {
                TemplateError(format!(
                    "the job template names {{{{{name}}}}}, which rustpx does not fill in: use {}",
                    PLACEHOLDERS.join(", ")
                ))
            })?;
            out.push_str(&value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(scheduler: Scheduler) -> JobRequest {
        JobRequest {
            scheduler,
            ids: vec![2, 3, 4],
            job_name: "rustpx-engines".into(),
            output_dir: "/home/u/jobs".into(),
            queue: Some("short".into()),
            time: Some("00:10:00".into()),
            resources: vec!["--mem=2G".into()],
            engine: "/opt/rustpx-engine --connect /home/u/jobs/connection.json".into(),
        }
    }

    #[test]
    fn the_slurm_script_asks_for_one_task_per_engine() {
        let script = request(Scheduler::Slurm)
            .render(Scheduler::Slurm.default_template())
            .unwrap();
        assert_eq!(
            script,
            "#!/bin/sh
#SBATCH --job-name=rustpx-engines
#SBATCH --ntasks=3
#SBATCH --output=/home/u/jobs/slurm-%j.out
#SBATCH --partition=short
#SBATCH --time=00:10:00
#SBATCH --mem=2G
# rustpx engines 2-4: engine id = 2 + $SLURM_PROCID
srun --kill-on-bad-exit=0 /opt/rustpx-engine --connect /home/u/jobs/connection.json --id-base 2
"
        );
    }

    #[test]
    fn the_grid_engine_script_is_an_array_job() {
        let mut request = request(Scheduler::GridEngine);
        request.resources = vec!["-l mem_free=2G".into()];
        let script = request
            .render(Scheduler::GridEngine.default_template())
            .unwrap();
        assert_eq!(
            script,
            "#!/bin/sh
#$ -N rustpx-engines
#$ -S /bin/sh
#$ -t 1-3
#$ -j y
#$ -o /home/u/jobs/
#$ -q short
#$ -l h_rt=00:10:00
#$ -l mem_free=2G
# rustpx engines 2-4: engine id = 2 + $SGE_TASK_ID - 1
exec /opt/rustpx-engine --connect /home/u/jobs/connection.json --id $((2 + SGE_TASK_ID - 1))
"
        );
    }

    #[test]
    fn shell_braces_pass_through_and_unknown_placeholders_are_named() {
        let request = request(Scheduler::Slurm);
        assert_eq!(
            request.render("echo ${HOME} {{ n }}").unwrap(),
            "echo ${HOME} 3"
        );
        assert_eq!(
            request.render("{{nodes}}").unwrap_err().0,
            format!(
                "the job template names {{{{nodes}}}}, which rustpx does not fill in: use {}",
                PLACEHOLDERS.join(", ")
            )
        );
        assert!(request
            .render("x {{n")
            .unwrap_err()
            .0
            .contains("does not close: '{{n'"));
    }
}
