//! Arena storage with typed handles (after naga's `arena`).
//!
//! Invariant enforced by every pass and checked by the validator: an expression's operands have
//! smaller handles than the expression itself, so arena order is a topological order (forward
//! passes iterate `iter()`, reverse-mode autodiff iterates it backwards).

use rlo_grammar::Span;
use serde::Serialize;
use std::marker::PhantomData;

/// An index into an [`Arena<T>`].
#[derive(Serialize)]
#[serde(transparent)]
pub struct Handle<T> {
    index: u32,
    #[serde(skip)]
    _marker: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    pub fn from_index(index: usize) -> Handle<T> {
        Handle {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            _marker: PhantomData,
        }
    }

    pub fn index(self) -> usize {
        self.index as usize
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Handle<T> {}
impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index
    }
}
impl<T> Eq for Handle<T> {}
impl<T> PartialOrd for Handle<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Handle<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.index.cmp(&other.index)
    }
}
impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.index.hash(state)
    }
}
impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "e{}", self.index)
    }
}
impl<T> std::fmt::Display for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "e{}", self.index)
    }
}

/// A growable store of `T` with one [`Span`] per element.
#[derive(Clone, Debug, Serialize)]
pub struct Arena<T> {
    data: Vec<T>,
    spans: Vec<Span>,
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Arena {
            data: Vec::new(),
            spans: Vec::new(),
        }
    }
}

impl<T> Arena<T> {
    pub fn new() -> Arena<T> {
        Arena::default()
    }

    pub fn append(&mut self, value: T, span: Span) -> Handle<T> {
        let h = Handle::from_index(self.data.len());
        self.data.push(value);
        self.spans.push(span);
        h
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn get(&self, h: Handle<T>) -> Option<&T> {
        self.data.get(h.index())
    }

    pub fn span(&self, h: Handle<T>) -> Span {
        self.spans.get(h.index()).copied().unwrap_or_default()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (Handle<T>, &T)> + ExactSizeIterator {
        self.data
            .iter()
            .enumerate()
            .map(|(i, v)| (Handle::from_index(i), v))
    }

    pub fn handles(&self) -> impl DoubleEndedIterator<Item = Handle<T>> + ExactSizeIterator {
        (0..self.data.len()).map(Handle::from_index)
    }
}

impl<T> std::ops::Index<Handle<T>> for Arena<T> {
    type Output = T;
    /// Handles are only made by `append` of the same arena; an out-of-range handle is a compiler
    /// bug that the validator reports before any indexing pass runs.
    #[allow(clippy::indexing_slicing)]
    fn index(&self, h: Handle<T>) -> &T {
        &self.data[h.index()]
    }
}

/// A side table indexed by handle (analyses: levels, reachability, stage of each node, ...).
#[derive(Clone, Debug)]
pub struct HandleVec<T, V> {
    data: Vec<V>,
    _marker: PhantomData<fn() -> T>,
}

impl<T, V: Clone> HandleVec<T, V> {
    pub fn new(len: usize, init: V) -> Self {
        HandleVec {
            data: vec![init; len],
            _marker: PhantomData,
        }
    }
}

impl<T, V> HandleVec<T, V> {
    pub fn len(&self) -> usize {
        self.data.len()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn get(&self, h: Handle<T>) -> Option<&V> {
        self.data.get(h.index())
    }
    pub fn push(&mut self, v: V) {
        self.data.push(v)
    }
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.data.iter_mut()
    }
}

impl<T, V> std::ops::Index<Handle<T>> for HandleVec<T, V> {
    type Output = V;
    #[allow(clippy::indexing_slicing)]
    fn index(&self, h: Handle<T>) -> &V {
        &self.data[h.index()]
    }
}

impl<T, V> std::ops::IndexMut<Handle<T>> for HandleVec<T, V> {
    #[allow(clippy::indexing_slicing)]
    fn index_mut(&mut self, h: Handle<T>) -> &mut V {
        &mut self.data[h.index()]
    }
}
