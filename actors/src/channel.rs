//! One actor per Discord channel: it owns the channel's conversation window and answers one
//! question at a time, in arrival order (its mailbox is the queue).
//!
//! A failed answer is a normal error reply, and a panicking answerer is caught here, so the actor
//! survives both with its window intact. Each completed exchange is saved to the store before the
//! reply goes out; a store that fails or hangs never holds an answer back: the exchange is kept
//! and the write retried.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::{
    Answerer, AskError, ChannelId, ConversationStore, Exchange, Question, Stats, StoreError,
    Ticket, Window,
};

/// How long one store call may take before the actor goes on without it.
const STORE_TIMEOUT: Duration = Duration::from_secs(5);
/// Delay before retrying a failed store write.
const SAVE_RETRY: Duration = Duration::from_secs(5);

pub struct ChannelActor;

/// What the supervisor and a channel actor both see: how far the actor has got, so the
/// supervisor can tell an idle actor (nothing routed to it left unanswered) from a busy one.
#[derive(Debug)]
pub struct ChannelShared {
    completed: AtomicU64,
    /// Exchanges in the window (once loaded), readable without messaging the actor.
    remembered: std::sync::atomic::AtomicUsize,
    idle_since: Mutex<Instant>,
    unsaved: AtomicBool,
}

impl ChannelShared {
    pub(crate) fn new() -> Self {
        Self {
            completed: AtomicU64::new(0),
            remembered: std::sync::atomic::AtomicUsize::new(usize::MAX),
            idle_since: Mutex::new(Instant::now()),
            unsaved: AtomicBool::new(false),
        }
    }

    /// Questions this actor has replied to.
    pub(crate) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// When the actor last finished a question (or was spawned).
    pub(crate) fn idle_since(&self) -> Instant {
        *self.idle_since.lock().expect("idle_since poisoned")
    }

    /// Exchanges the window holds, `None` before it was loaded from the store.
    pub(crate) fn remembered(&self) -> Option<usize> {
        let count = self.remembered.load(Ordering::Acquire);
        (count != usize::MAX).then_some(count)
    }

    /// Whether exchanges are waiting for a store write (such an actor is not evicted).
    pub(crate) fn has_unsaved(&self) -> bool {
        self.unsaved.load(Ordering::Acquire)
    }
}

pub struct ChannelArgs {
    pub(crate) channel_id: ChannelId,
    pub(crate) window_exchanges: usize,
    /// The window size the operator wants now; followed on the next question.
    pub(crate) live_window: Arc<AtomicUsize>,
    pub(crate) answerer: Arc<dyn Answerer>,
    pub(crate) store: Arc<dyn ConversationStore>,
    pub(crate) shared: Arc<ChannelShared>,
    pub(crate) stats: Arc<Stats>,
}

pub struct ChannelState {
    args: ChannelArgs,
    window: Window,
    /// Whether the window has been loaded from the store (a failed load is retried).
    loaded: bool,
    /// Exchanges answered but not yet saved, oldest first.
    unsaved: Vec<Exchange>,
    retry_scheduled: bool,
}

pub enum ChannelMsg {
    /// Answer the question with this channel's window once its ticket's gate opens; the reply
    /// goes to the port.
    Ask(Question, Ticket, RpcReplyPort<Result<String, AskError>>),
    /// Reply with a copy of the window, oldest first.
    Snapshot(RpcReplyPort<Vec<Exchange>>),
    /// Forget the window, in memory and in the store, after the questions queued before; reply
    /// with how many exchanges were forgotten. Counts as a routed message (see the supervisor).
    Reset(RpcReplyPort<Result<usize, StoreError>>),
    /// Retry saving the exchanges the store refused earlier.
    RetrySave,
}

impl Actor for ChannelActor {
    type Msg = ChannelMsg;
    type State = ChannelState;
    type Arguments = ChannelArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ChannelArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // The window is loaded on the first question rather than here: the supervisor awaits
        // pre_start, and a slow store must not stall routing for every other channel.
        Ok(ChannelState {
            window: Window::new(args.window_exchanges),
            args,
            loaded: false,
            unsaved: Vec::new(),
            retry_scheduled: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: ChannelMsg,
        state: &mut ChannelState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ChannelMsg::Ask(question, ticket, reply) => {
                let result = state.ask(&myself, &question, ticket).await;
                let stats = &state.args.stats;
                match &result {
                    Ok(_) => stats.answered.fetch_add(1, Ordering::Relaxed),
                    Err(AskError::Withdrawn(_) | AskError::Expired(_)) => {
                        stats.withdrawn.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
                };
                state.publish_remembered();
                // The asker may have gone away (e.g. shutdown); nothing to do then.
                let _ = reply.send(result);
                let shared = &state.args.shared;
                *shared.idle_since.lock().expect("idle_since poisoned") = Instant::now();
                shared.completed.fetch_add(1, Ordering::AcqRel);
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            }
            ChannelMsg::Reset(reply) => {
                state.ensure_loaded().await;
                let forgotten = state.window.len();
                state.window.clear();
                state.unsaved.clear();
                let args = &state.args;
                let cleared = with_timeout(args.store.clear(args.channel_id))
                    .await
                    .map(|()| forgotten);
                if cleared.is_ok() {
                    // The window left memory (and the store) on request.
                    args.stats.window_reset();
                    args.shared.unsaved.store(false, Ordering::Release);
                    info!(
                        channel_id = args.channel_id,
                        forgotten, "channel memory reset"
                    );
                }
                state.publish_remembered();
                let _ = reply.send(cleared);
                let shared = &state.args.shared;
                *shared.idle_since.lock().expect("idle_since poisoned") = Instant::now();
                shared.completed.fetch_add(1, Ordering::AcqRel);
            }
            ChannelMsg::Snapshot(reply) => {
                state.ensure_loaded().await;
                let _ = reply.send(state.window.to_vec());
            }
            ChannelMsg::RetrySave => {
                state.retry_scheduled = false;
                state.save(&myself).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut ChannelState,
    ) -> Result<(), ActorProcessingErr> {
        if !state.unsaved.is_empty() {
            if let Err(err) = state.write_unsaved().await {
                error!(
                    channel_id = state.args.channel_id,
                    lost = state.unsaved.len(),
                    "channel stopped with exchanges the store would not take: {err}"
                );
            }
        }
        Ok(())
    }
}

impl ChannelState {
    fn publish_remembered(&self) {
        if self.loaded {
            self.args
                .shared
                .remembered
                .store(self.window.len(), Ordering::Release);
        }
    }

    /// Waits for the ticket's gate, then answers: from the window when this exchange was
    /// answered already (a resumed question), otherwise from the model.
    async fn ask(
        &mut self,
        myself: &ActorRef<ChannelMsg>,
        question: &Question,
        ticket: Ticket,
    ) -> Result<String, AskError> {
        if let Some(gate) = ticket.gate {
            gate.wait(ticket.deadline).await?;
        }
        self.follow_window_size();
        self.ensure_loaded().await;
        if let Some(done) = ticket.id.and_then(|id| self.window.find(id)) {
            info!(
                channel_id = self.args.channel_id,
                "answered before: replying with the stored answer"
            );
            return Ok(done.answer.clone());
        }
        if ticket
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(AskError::Expired(
                "its deadline passed while it waited in the channel's queue".into(),
            ));
        }
        if let Some(started) = &ticket.started {
            let _ = started.set(Instant::now());
        }
        let answer = self.answer(question, ticket.progress.as_ref()).await?;
        let remembered = self.args.answerer.remembered(&answer);
        let exchange = Exchange::new(question.text.clone(), remembered).with_id(ticket.id);
        self.window.push(exchange.clone());
        self.unsaved.push(exchange);
        self.save(myself).await;
        Ok(answer)
    }

    /// Resizes the window when the operator changed K: a smaller one drops the oldest exchanges,
    /// a larger one fills up with the next answers.
    fn follow_window_size(&mut self) {
        let wanted = self.args.live_window.load(Ordering::Acquire);
        if wanted != self.args.window_exchanges {
            self.args.window_exchanges = wanted;
            self.window = Window::from_exchanges(wanted, self.window.to_vec());
        }
    }

    async fn ensure_loaded(&mut self) {
        if self.loaded {
            return;
        }
        let args = &self.args;
        let started = Instant::now();
        let load = args.store.load(args.channel_id, args.window_exchanges);
        match with_timeout(load).await {
            Ok(stored) => {
                // A stored window means this channel talked before and its actor was evicted
                // (or the process restarted): the question paid for a cold load.
                if !stored.is_empty() {
                    args.stats.cold_question(started.elapsed());
                }
                // What was answered since and saved is in `stored`; what the store has not
                // taken yet is newer than anything it holds.
                self.window = Window::from_exchanges(
                    args.window_exchanges,
                    stored.into_iter().chain(self.unsaved.iter().cloned()),
                );
                self.loaded = true;
                self.publish_remembered();
            }
            Err(err) => warn!(
                channel_id = args.channel_id,
                "answering without the stored window, will retry loading it: {err}"
            ),
        }
    }

    async fn answer(
        &self,
        question: &Question,
        progress: Option<&crate::Progress>,
    ) -> Result<String, AskError> {
        let history = self.window.to_vec();
        let answerer = &self.args.answerer;
        let answering = async {
            match progress {
                Some(progress) => answerer.answer_live(question, &history, progress).await,
                None => answerer.answer(question, &history).await,
            }
        };
        match AssertUnwindSafe(answering).catch_unwind().await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(err)) => {
                warn!(channel_id = self.args.channel_id, "answer failed: {err}");
                Err(AskError::Failed(err))
            }
            Err(panic) => {
                let message = panic_message(panic);
                self.args.stats.panics.fetch_add(1, Ordering::Relaxed);
                error!(
                    channel_id = self.args.channel_id,
                    "the answerer panicked, the channel keeps serving: {message}"
                );
                Err(AskError::Panicked(message))
            }
        }
    }

    /// Writes the unsaved exchanges; on failure keeps them and schedules a retry.
    async fn save(&mut self, myself: &ActorRef<ChannelMsg>) {
        if self.unsaved.is_empty() {
            return;
        }
        match self.write_unsaved().await {
            Ok(()) => {
                if self.args.shared.has_unsaved() {
                    info!(
                        channel_id = self.args.channel_id,
                        "conversation store writes resumed"
                    );
                }
                self.args.shared.unsaved.store(false, Ordering::Release);
            }
            Err(err) => {
                warn!(
                    channel_id = self.args.channel_id,
                    pending = self.unsaved.len(),
                    "saving the window failed, retrying in {SAVE_RETRY:?}: {err}"
                );
                self.args.shared.unsaved.store(true, Ordering::Release);
                if !self.retry_scheduled {
                    self.retry_scheduled = true;
                    myself.send_after(SAVE_RETRY, || ChannelMsg::RetrySave);
                }
            }
        }
    }

    async fn write_unsaved(&mut self) -> Result<(), StoreError> {
        let args = &self.args;
        let write = args
            .store
            .append(args.channel_id, &self.unsaved, args.window_exchanges);
        with_timeout(write).await?;
        self.unsaved.clear();
        Ok(())
    }
}

async fn with_timeout<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(STORE_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| Err(StoreError(format!("no answer within {STORE_TIMEOUT:?}"))))
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
