//! Support for tests that run one of our programs as a process. Readiness is explicit: the test
//! waits for a log line the program prints once it is in a given state (bounded by a deadline),
//! never for a fixed time.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// A running program whose stdout and stderr lines are collected.
pub struct Program {
    pid: u32,
    lines: Receiver<String>,
    exit: Receiver<std::io::Result<ExitStatus>>,
    exited: bool,
    /// Every line printed so far.
    pub log: Vec<String>,
}

impl Program {
    /// Starts `command` with its output captured.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        let mut child: Child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
        let (line_tx, lines) = channel();
        if let Some(out) = child.stdout.take() {
            let tx = line_tx.clone();
            std::thread::spawn(move || {
                BufReader::new(out).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        if let Some(err) = child.stderr.take() {
            let tx = line_tx;
            std::thread::spawn(move || {
                BufReader::new(err).lines().map_while(Result::ok).for_each(|l| drop(tx.send(l)))
            });
        }
        let pid = child.id();
        let (exit_tx, exit) = channel();
        std::thread::spawn(move || drop(exit_tx.send(child.wait())));
        Ok(Self { pid, lines, exit, exited: false, log: Vec::new() })
    }

    /// Waits until a line contains `needle` and returns it; panics with the log after `within`.
    pub fn wait_for_log(&mut self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no log line with {needle:?} within {within:?}:\n{}", self.log.join("\n"))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the program exited before logging {needle:?}:\n{}", self.log.join("\n"))
                }
            }
        }
    }

    /// Sends `signal` (e.g. "TERM") to the program.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill").arg(format!("-{signal}")).arg(self.pid.to_string()).status();
    }

    /// Sends SIGTERM and waits for the exit (killing the program after `within`); returns the
    /// exit status and the whole log.
    pub fn terminate(mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        self.signal("TERM");
        let status = match self.exit.recv_timeout(within) {
            Ok(Ok(status)) => {
                self.exited = true;
                status
            }
            Ok(Err(e)) => panic!("waiting for the program: {e}"),
            Err(_) => {
                self.signal("KILL");
                panic!("the program did not stop within {within:?} of SIGTERM:\n{}", self.log.join("\n"));
            }
        };
        // The pipes close with the process: the rest of the output is already there or on its way.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.log.push(line);
        }
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if !self.exited && self.exit.try_recv().is_err() {
            self.signal("KILL");
        }
    }
}
