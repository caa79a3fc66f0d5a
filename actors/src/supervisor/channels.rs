//! The [`Channels`] handle: the public API of the running actor system (ask, submit, reset,
//! memory, window, stats, discard, reconfigure, stop), each a message to the supervisor.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef, SpawnErr};
use tracing::warn;

use crate::{
    AskError, ChannelId, ChannelMsg, Exchange, Question, Stats, StatsSnapshot, StoreError, Ticket,
};

use super::{ChannelSettings, ChannelSupervisor, MemoryReport, SupervisorArgs, SupervisorMsg};

/// A handle to the running actor system: what the rest of the bot talks to.
#[derive(Clone)]
pub struct Channels {
    supervisor: ActorRef<SupervisorMsg>,
    stats: Arc<Stats>,
}

impl Channels {
    /// Starts the supervisor (channel actors start on demand).
    pub async fn start(args: SupervisorArgs) -> Result<Self, SpawnErr> {
        let stats = args.stats.clone();
        let (supervisor, _) = Actor::spawn(None, ChannelSupervisor, args).await?;
        Ok(Self { supervisor, stats })
    }

    /// Asks a question in its channel and waits for the answer. Questions of one channel are
    /// answered one at a time in the order they were asked.
    pub async fn ask(&self, question: Question) -> Result<String, AskError> {
        self.submit(question).await
    }

    /// Queues the question in its channel *now* (its place in the channel's order is fixed when
    /// this returns) and gives back a future of the answer, so a caller can do other work, such
    /// as acknowledging the interaction, without losing its turn.
    pub fn submit(
        &self,
        question: Question,
    ) -> impl std::future::Future<Output = Result<String, AskError>> + Send + 'static {
        self.submit_with(question, Ticket::default())
    }

    /// Like [`submit`](Self::submit), with the question's [`Ticket`]: its id, its deadline and
    /// the gate that holds it until the front end says go.
    pub fn submit_with(
        &self,
        question: Question,
        ticket: Ticket,
    ) -> impl std::future::Future<Output = Result<String, AskError>> + Send + 'static {
        let (reply, answer) = ractor::concurrency::oneshot();
        let queued = self
            .supervisor
            .cast(SupervisorMsg::Ask(question, ticket, reply.into()));
        async move {
            if let Err(err) = queued {
                return Err(AskError::Unavailable(format!(
                    "the channel supervisor is not running: {err}"
                )));
            }
            answer.await.unwrap_or_else(|_| {
                Err(AskError::Unavailable(
                    "the channel actor stopped before replying".into(),
                ))
            })
        }
    }

    /// Forgets the channel's window in memory and in the store, after the questions already
    /// queued in the channel are answered; returns how many exchanges were forgotten.
    pub async fn reset(&self, channel: ChannelId) -> Result<usize, StoreError> {
        match self
            .supervisor
            .call(|reply| SupervisorMsg::Reset(channel, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            _ => Err(StoreError("the channel supervisor is not running".into())),
        }
    }

    /// What the channel remembers, without waiting for its queue.
    pub async fn memory(&self, channel: ChannelId) -> Option<MemoryReport> {
        self.supervisor
            .call(|reply| SupervisorMsg::Memory(channel, reply), None)
            .await
            .ok()?
            .success_or(())
            .ok()
    }

    /// The window of a channel whose actor is alive (`None` otherwise), oldest first.
    pub async fn window(&self, channel: ChannelId) -> Option<Vec<Exchange>> {
        let actor = self
            .supervisor
            .call(|reply| SupervisorMsg::Lookup(channel, reply), None)
            .await
            .ok()?
            .success_or(())
            .ok()??;
        actor
            .call(ChannelMsg::Snapshot, None)
            .await
            .ok()?
            .success_or(())
            .ok()
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Stops `channel`'s actor and forgets its in-memory window (see [`SupervisorMsg::Discard`]).
    pub fn discard(&self, channel: ChannelId) {
        if let Err(err) = self.supervisor.cast(SupervisorMsg::Discard(channel)) {
            warn!("cannot discard a channel actor: {err}");
        }
    }

    /// Applies new settings while running (see [`SupervisorMsg::Reconfigure`]).
    pub fn reconfigure(&self, settings: ChannelSettings) {
        if let Err(err) = self.supervisor.cast(SupervisorMsg::Reconfigure(settings)) {
            warn!("cannot apply new channel settings: {err}");
        }
    }

    /// Stops the supervisor and every channel actor.
    pub async fn stop(&self) {
        let _ = self
            .supervisor
            .stop_and_wait(Some("shutdown".into()), Some(Duration::from_secs(1)))
            .await;
    }
}
