//! `zundamon ask`: questions from the command line or stdin, answered by the same agent and actor
//! system as the Discord bot, without Discord. Useful to try a model, a persona or a search setup.
//!
//! All questions go to one in-process channel (a [`MemoryStore`] keeps its window), so lines read
//! from stdin form one conversation, exactly like questions in one Discord channel.

use std::sync::Arc;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use zundamon_actors::{Channels, MemoryStore, Question, SupervisorArgs};

use crate::agent::ZundaAgent;
use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::voice::ERROR_REPLY;

/// The user id questions are asked under (a CLI user has no Discord id).
const CLI_USER_ID: u64 = 0;

/// Answers `question`, or every line of stdin when it is `None`, in channel `channel` as
/// `user_name`. Answers go to stdout; prompts and failure reasons to stderr. Fails (non-zero exit)
/// when a question got no answer; with stdin, the remaining lines are still answered first.
pub async fn run(
    config: Config,
    question: Option<String>,
    channel: u64,
    user_name: String,
) -> anyhow::Result<()> {
    if question.as_deref().is_some_and(|q| q.trim().is_empty()) {
        bail!("the question is empty: pass some text, or no question to read questions from stdin");
    }
    let metrics = Arc::new(Metrics::new());
    let agent = ZundaAgent::new(&config, metrics).context("cannot set up the agent")?;
    let settings = config.channels.settings();
    let channels = Channels::start(SupervisorArgs::new(
        settings,
        Arc::new(agent),
        Arc::new(MemoryStore::new()),
    ))
    .await
    .context("cannot start the channel actors")?;

    let asker = Asker {
        channels: &channels,
        channel,
        user_name,
    };
    let result = match question {
        Some(question) => asker.ask(question).await,
        None => asker.repl().await,
    };
    channels.stop().await;
    result
}

struct Asker<'a> {
    channels: &'a Channels,
    channel: u64,
    user_name: String,
}

impl Asker<'_> {
    /// Asks one question and prints its answer, or Zundamon's error message (stdout) and the
    /// reason (stderr).
    async fn ask(&self, text: String) -> anyhow::Result<()> {
        let question = Question {
            channel_id: self.channel,
            user_id: CLI_USER_ID,
            user_name: self.user_name.clone(),
            text,
            places: Vec::new(),
            attachments: Vec::new(),
        };
        let result = self.channels.ask(question).await;
        let mut stdout = tokio::io::stdout();
        match result {
            Ok(answer) => {
                stdout.write_all(format!("{answer}\n").as_bytes()).await?;
                stdout.flush().await?;
                Ok(())
            }
            Err(err) => {
                stdout
                    .write_all(format!("{ERROR_REPLY}\n").as_bytes())
                    .await?;
                stdout.flush().await?;
                eprintln!("error: {err}");
                Err(anyhow::Error::new(err).context("the question got no answer"))
            }
        }
    }

    /// Answers stdin line by line (blank lines skipped) until end of input.
    async fn repl(&self) -> anyhow::Result<()> {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let (mut asked, mut failed) = (0usize, 0usize);
        loop {
            prompt().await?;
            let Some(line) = lines.next_line().await.context("cannot read stdin")? else {
                break;
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            asked += 1;
            // The reason is already on stderr; keep the conversation going.
            if self.ask(line.to_owned()).await.is_err() {
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} of {asked} questions got no answer");
        }
        Ok(())
    }
}

async fn prompt() -> anyhow::Result<()> {
    let mut stderr = tokio::io::stderr();
    stderr.write_all(b"> ").await?;
    stderr.flush().await?;
    Ok(())
}
