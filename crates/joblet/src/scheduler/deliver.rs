//! The three ways results come back (joblib's `return_as`): a list in input order, an iterator
//! in input order, an iterator in completion order.

use super::{Call, Values};
use crate::error::Error;
use std::collections::BTreeMap;

/// Waits for every result and returns them in input order. `capacity`: the number of
/// results expected (the input's lower size hint), to allocate the output once.
pub(crate) fn collect_list<T: Send + 'static, E: Send + 'static>(
    mut call: Call<T, E>,
    capacity: usize,
) -> Result<Vec<T>, Error<E>> {
    // The input's lower size hint may be huge (`(0..).map(..)` stopped by an error): reserve
    // no more than a batch's worth up front.
    let mut out: Vec<T> = Vec::with_capacity(capacity.min(super::batching::MAX_BATCH));
    // Batches cover consecutive indices, so a batch can join `out` once every earlier one has.
    let mut early: BTreeMap<usize, Vec<T>> = BTreeMap::new();
    while let Some(next) = call.next_values() {
        let Values { first, values } = next?;
        // The list keeps everything anyway: free the window slot at once.
        call.release(1);
        if first == out.len() {
            if out.capacity() == 0 {
                out = values;
            } else {
                out.extend(values);
            }
            while let Some(values) = early.remove(&out.len()) {
                out.extend(values);
            }
        } else {
            early.insert(first, values);
        }
    }
    if let Some(lost) = lost_results(out.len(), &early, call.total()) {
        return Err(lost);
    }
    Ok(out)
}

/// Every task reports, so a call that ended with results missing (`early` batches waiting for
/// a gap, or fewer results than input items) is an engine failure: say so rather than return
/// a short list.
fn lost_results<T, E>(
    delivered: usize,
    early: &BTreeMap<usize, Vec<T>>,
    total: Option<usize>,
) -> Option<Error<E>> {
    if early.is_empty() && total.is_none_or(|t| t == delivered) {
        return None;
    }
    Some(Error::Panicked {
        index: delivered,
        message: "the results from this task on were lost: a worker stopped without reporting them"
            .into(),
    })
}

/// Results in input order, computed ahead while the caller consumes them (joblib's
/// `return_as="generator"`). Created by [`crate::Parallel::iter`] and
/// [`crate::Parallel::try_iter`].
///
/// At most `pre_dispatch` batches are computed ahead of the result the caller takes next, so
/// memory stays bounded whatever the length of the input. The first failure is yielded as
/// `Some(Err(..))` as soon as it is known, and the iterator ends after it. Dropping the
/// iterator stops the call.
pub struct Ordered<T, E> {
    call: Call<T, E>,
    next: usize,
    current: std::vec::IntoIter<T>,
    early: BTreeMap<usize, Vec<T>>,
    holds_slot: bool,
    done: bool,
}

impl<T: Send + 'static, E: Send + 'static> Ordered<T, E> {
    pub(crate) fn new(call: Call<T, E>) -> Self {
        Ordered {
            call,
            next: 0,
            current: Vec::new().into_iter(),
            early: BTreeMap::new(),
            holds_slot: false,
            done: false,
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Iterator for Ordered<T, E> {
    type Item = Result<T, Error<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(v) = self.current.next() {
                self.next += 1;
                return Some(Ok(v));
            }
            if std::mem::take(&mut self.holds_slot) {
                self.call.release(1);
            }
            if let Some(values) = self.early.remove(&self.next) {
                self.current = values.into_iter();
                self.holds_slot = true;
                continue;
            }
            match self.call.next_values() {
                None => {
                    self.done = true;
                    return lost_results(self.next, &self.early, self.call.total()).map(Err);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(Values { first, values })) => {
                    self.early.insert(first, values);
                }
            }
        }
    }
}

/// Results in completion order, each with its input index (joblib's
/// `return_as="generator_unordered"`). Created by [`crate::Parallel::iter_unordered`] and
/// [`crate::Parallel::try_iter_unordered`].
///
/// Bounded by `pre_dispatch` like [`Ordered`]; the first failure ends it.
pub struct Unordered<T, E> {
    call: Call<T, E>,
    current: std::iter::Zip<std::ops::RangeFrom<usize>, std::vec::IntoIter<T>>,
    holds_slot: bool,
    done: bool,
}

impl<T: Send + 'static, E: Send + 'static> Unordered<T, E> {
    pub(crate) fn new(call: Call<T, E>) -> Self {
        Unordered {
            call,
            current: (0..).zip(Vec::new()),
            holds_slot: false,
            done: false,
        }
    }
}

impl<T: Send + 'static, E: Send + 'static> Iterator for Unordered<T, E> {
    type Item = Result<(usize, T), Error<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some(item) = self.current.next() {
                return Some(Ok(item));
            }
            if std::mem::take(&mut self.holds_slot) {
                self.call.release(1);
            }
            match self.call.next_values() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(e));
                }
                Some(Ok(Values { first, values })) => {
                    self.current = (first..).zip(values);
                    self.holds_slot = true;
                }
            }
        }
    }
}
