//! The conversation window: the last K question/answer exchanges of one channel.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// One question and the answer the bot gave to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange {
    /// A stable id (the interaction or message id that asked it), so a write that is retried, or
    /// a question resumed after a crash, never stores or answers the same exchange twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The question as the user typed it (without the name/time framing).
    pub question: String,
    /// The final answer (without tool chatter).
    pub answer: String,
}

impl Exchange {
    pub fn new(question: impl Into<String>, answer: impl Into<String>) -> Self {
        Self {
            id: None,
            question: question.into(),
            answer: answer.into(),
        }
    }

    /// The same exchange with a stable id.
    pub fn with_id(mut self, id: Option<u64>) -> Self {
        self.id = id;
        self
    }
}

/// Keeps at most `capacity` exchanges, oldest first; pushing beyond that drops the oldest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    capacity: usize,
    exchanges: VecDeque<Exchange>,
}

impl Window {
    /// An empty window of `capacity` exchanges. A capacity of 0 remembers nothing.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            exchanges: VecDeque::with_capacity(capacity),
        }
    }

    /// A window holding the last `capacity` of `exchanges` (given oldest first).
    pub fn from_exchanges(capacity: usize, exchanges: impl IntoIterator<Item = Exchange>) -> Self {
        let mut window = Self::new(capacity);
        for exchange in exchanges {
            window.push(exchange);
        }
        window
    }

    /// Appends the newest exchange, dropping the oldest ones beyond the capacity.
    pub fn push(&mut self, exchange: Exchange) {
        if self.capacity == 0 {
            return;
        }
        while self.exchanges.len() >= self.capacity {
            self.exchanges.pop_front();
        }
        self.exchanges.push_back(exchange);
    }

    /// The exchanges, oldest first.
    pub fn to_vec(&self) -> Vec<Exchange> {
        self.exchanges.iter().cloned().collect()
    }

    /// The exchange with this id, if the window still holds it.
    pub fn find(&self, id: u64) -> Option<&Exchange> {
        self.exchanges
            .iter()
            .find(|exchange| exchange.id == Some(id))
    }

    /// Forgets every exchange.
    pub fn clear(&mut self) {
        self.exchanges.clear();
    }

    pub fn len(&self) -> usize {
        self.exchanges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(n: usize) -> Exchange {
        Exchange::new(format!("q{n}"), format!("a{n}"))
    }

    #[test]
    fn keeps_exactly_the_last_k_in_order() {
        let mut window = Window::new(5);
        for n in 1..=8 {
            window.push(ex(n));
        }
        assert_eq!(window.len(), 5);
        assert_eq!(window.to_vec(), (4..=8).map(ex).collect::<Vec<_>>());
    }

    #[test]
    fn fewer_than_k_are_all_kept() {
        let mut window = Window::new(5);
        window.push(ex(1));
        window.push(ex(2));
        assert_eq!(window.to_vec(), vec![ex(1), ex(2)]);
    }

    #[test]
    fn k_is_configurable() {
        let mut window = Window::new(2);
        for n in 1..=4 {
            window.push(ex(n));
        }
        assert_eq!(window.to_vec(), vec![ex(3), ex(4)]);
        let mut one = Window::new(1);
        one.push(ex(1));
        one.push(ex(2));
        assert_eq!(one.to_vec(), vec![ex(2)]);
    }

    #[test]
    fn zero_capacity_remembers_nothing() {
        let mut window = Window::new(0);
        window.push(ex(1));
        assert!(window.is_empty());
    }

    #[test]
    fn exchanges_are_found_by_id_and_cleared() {
        let mut window = Window::new(3);
        window.push(ex(1).with_id(Some(11)));
        window.push(ex(2));
        assert_eq!(window.find(11), Some(&ex(1).with_id(Some(11))));
        assert_eq!(window.find(12), None);
        window.clear();
        assert!(window.is_empty());
    }

    #[test]
    fn from_exchanges_keeps_the_newest() {
        let window = Window::from_exchanges(3, (1..=6).map(ex));
        assert_eq!(window.to_vec(), vec![ex(4), ex(5), ex(6)]);
        assert_eq!(window.capacity(), 3);
    }
}
