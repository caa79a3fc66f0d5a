//! What a question carries besides its text: a stable id, the time after which nobody will see
//! its answer, and a gate the front end opens once it knows the answer can be delivered.
//!
//! The front end fixes a question's place in its channel's queue the moment the question arrives
//! (so a channel's order is the arrival order), but it learns only later whether Discord took the
//! acknowledgement. The gate lets the channel actor wait for that verdict before it calls the
//! model: a question nobody will see is withdrawn without a model call and never enters the
//! window.

use tokio::sync::{oneshot, watch};

use crate::AskError;
use tokio::time::Instant;

/// The extra facts about a queued question.
#[derive(Debug, Default)]
pub struct Ticket {
    /// A stable id for the exchange (the interaction or message id); an exchange already in the
    /// window under this id is replied to again instead of asking the model a second time.
    pub id: Option<u64>,
    /// After this instant the answer cannot be delivered any more (the interaction token has
    /// expired): the question is withdrawn if it has not started by then.
    pub deadline: Option<Instant>,
    /// Held until the front end says go (or withdraws the question).
    pub gate: Option<Gate>,
    /// Where the answerer shows its work while it answers (a status line, the answer so far),
    /// for a front end that streams it to the user.
    pub progress: Option<Progress>,
    /// Set by the channel actor when it starts answering (after the gate and the queue), so
    /// the front end can tell the time spent answering from the time spent waiting.
    pub started: Option<Started>,
}

/// When a question started being answered; see [`Ticket::started`].
pub type Started = std::sync::Arc<std::sync::OnceLock<Instant>>;

/// What the user may see of an answer in the making.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Live {
    /// Nothing to show yet.
    #[default]
    Waiting,
    /// A status line (searching, thinking…), replaced by the answer when it comes.
    Status(String),
    /// The answer so far (already cleaned of anything users must not see).
    Text(String),
}

/// The answerer's side of a live view: it sends the latest state; the reader sees only the newest.
pub type Progress = watch::Sender<Live>;

impl Ticket {
    /// A ticket with an id and a deadline, and no gate (the question may start at once).
    pub fn new(id: Option<u64>, deadline: Option<Instant>) -> Self {
        Self {
            id,
            deadline,
            gate: None,
            progress: None,
            started: None,
        }
    }

    /// The same ticket noting when it starts being answered in `started`.
    pub fn timed(mut self, started: Started) -> Self {
        self.started = Some(started);
        self
    }

    /// The same ticket held by `gate`.
    pub fn gated(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// The channel actor's side of a gate: resolves to go, or to the reason the question was withdrawn.
#[derive(Debug)]
pub struct Gate(oneshot::Receiver<Result<(), String>>);

/// The front end's side of a gate. Dropping it without a verdict withdraws the question.
#[derive(Debug)]
pub struct GateKeeper(oneshot::Sender<Result<(), String>>);

/// A new gate, closed until its keeper decides.
pub fn gate() -> (GateKeeper, Gate) {
    let (keeper, gate) = oneshot::channel();
    (GateKeeper(keeper), Gate(gate))
}

impl GateKeeper {
    /// Lets the question start.
    pub fn open(self) {
        let _ = self.0.send(Ok(()));
    }

    /// Withdraws the question: it is skipped without calling the model.
    pub fn withdraw(self, reason: impl Into<String>) {
        let _ = self.0.send(Err(reason.into()));
    }
}

impl Gate {
    /// Waits for the verdict, at most until `deadline`: `Err(Withdrawn)` when the front end
    /// withdrew the question, `Err(Expired)` when the deadline came first.
    pub async fn wait(self, deadline: Option<Instant>) -> Result<(), AskError> {
        let verdict = async {
            self.0
                .await
                .unwrap_or_else(|_| Err("the front end abandoned the question".into()))
                .map_err(AskError::Withdrawn)
        };
        match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, verdict)
                .await
                .unwrap_or_else(|_| {
                    Err(AskError::Expired(
                        "no verdict before the answer's deadline".into(),
                    ))
                }),
            None => verdict.await,
        }
    }
}
