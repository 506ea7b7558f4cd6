//! `flywheel sql`: the interactive shell and the script runner.
//!
//! The shell reads lines with editing and history until a statement ends with `;`, runs it in the
//! shared engine and prints an aligned table with the row count and time. Scripts (`-e`, `-f`) run
//! statement by statement and stop at the first error, which goes to stderr with a non-zero exit.

use std::process::ExitCode;
use std::time::Instant;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::print::render;
use crate::{Config, Engine, Result};

/// Runs every statement of `sql`; returns the exit code (1 at the first error).
pub(super) async fn run_script(engine: &Engine, sql: &str) -> ExitCode {
    if run_statements(engine, sql).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs the statements of `sql` in order, printing each result; stops at the first error, which
/// goes to stderr. Returns whether every statement succeeded.
async fn run_statements(engine: &Engine, sql: &str) -> bool {
    let statements = match engine.parse(sql) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error: {}", e.user_message());
            return false;
        }
    };
    for statement in statements {
        let start = Instant::now();
        let rendered = match engine.execute(statement).await {
            Ok(output) => render(output, start).await,
            Err(e) => Err(e),
        };
        match rendered {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("Error: {}", e.user_message());
                return false;
            }
        }
    }
    true
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".flywheel_history"))
}

/// The interactive shell.
pub(super) async fn interactive(engine: &Engine, config: &Config) -> Result<ExitCode> {
    let mut editor = DefaultEditor::new()
        .map_err(|e| crate::Error::Config(format!("cannot start the line editor: {e}")))?;
    let history = history_path();
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "Flywheel {} SQL shell on warehouse {}\nEnd statements with `;`. \\q quits.",
        env!("CARGO_PKG_VERSION"),
        config.warehouse
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "flywheel> "
        } else {
            "       -> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty()
                    && matches!(trimmed, "\\q" | "quit" | "exit" | "quit;" | "exit;")
                {
                    break;
                }
                if trimmed.is_empty() && buffer.is_empty() {
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !ends_statement(&buffer) {
                    continue;
                }
                let sql = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(sql.trim());
                run_statements(engine, &sql).await;
            }
            Err(ReadlineError::Interrupted) => {
                // Ctrl-C clears the statement being typed.
                buffer.clear();
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("Error: {e}");
                break;
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether `buffer` ends a statement: its last token, spaces and comments aside, is `;` (so
/// `SELECT 1; -- why` runs). Text that does not tokenize yet (an open string or block comment)
/// does not.
fn ends_statement(buffer: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    match Tokenizer::new(&GenericDialect {}, buffer).tokenize() {
        Ok(tokens) => tokens
            .iter()
            .rev()
            .find(|t| !matches!(t, Token::Whitespace(_)))
            .is_some_and(|t| *t == Token::SemiColon),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::ends_statement;

    #[test]
    fn a_statement_ends_at_a_semicolon_whatever_follows_it_on_the_line() {
        for done in [
            "SELECT 1;",
            "SELECT 1;   -- the first version\n",
            "SELECT 1; /* note */",
            "SELECT ';' AS s;",
        ] {
            assert!(ends_statement(done), "{done}");
        }
        for open in [
            "SELECT 1",
            "SELECT 1 -- not yet;",
            "SELECT 'a;",
            "SELECT ';' AS s",
            "SELECT 1 /* ; */",
        ] {
            assert!(!ends_statement(open), "{open}");
        }
    }
}
