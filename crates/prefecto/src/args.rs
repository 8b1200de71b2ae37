//! The arguments of `map`: one per task parameter, each either an iterable of
//! inputs or [`unmapped`] (the same value for every call).
//!
//! Arguments are passed as a tuple in parameter order, so every element type is
//! checked at compile time against the task's signature.

use thiserror::Error;

use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::BoxStream;

use crate::future::{PrefectFuture, PrefectFutureList};
use crate::inputs::{Input, IntoRunArgs, SharedValue};

mod zipped;
pub use zipped::{ListedInputs, Zipped};

/// Why a set of `map` arguments was refused. Nothing was submitted.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MapError {
    /// Every argument was `unmapped`, so there is nothing to map over.
    #[error("Must provide at least one non-unmapped iterable.")]
    NoMappedIterable,
    /// Two mapped iterables have different lengths.
    #[error(
        "Expected all iterables to be of length {expected} like '{expected_param}'. \
         '{param}' is length {actual}."
    )]
    LengthMismatch {
        /// The first mapped parameter by name, whose length sets the expectation.
        expected_param: &'static str,
        /// Its length.
        expected: usize,
        /// The parameter whose length differs.
        param: &'static str,
        /// Its length.
        actual: usize,
    },
    /// In a streaming map, a mapped iterator ran out before another: found
    /// when it did, after the inputs before it were mapped.
    #[error(
        "'{ended}' ran out after {after} input(s) while '{longer}' had more: \
         the mapped iterables must have equal lengths."
    )]
    UnequalLengths {
        /// The parameter whose iterator ran out first.
        ended: &'static str,
        /// How many inputs were mapped before it did.
        after: usize,
        /// A parameter whose iterator had more.
        longer: &'static str,
    },
    /// In a streaming map, reading the next input panicked (an iterator's
    /// `next` or a stream's `poll_next`): the map reads no further, after
    /// the inputs before it were mapped.
    #[error("Reading input #{after} panicked: {message}")]
    InputPanicked {
        /// How many inputs were read before it.
        after: usize,
        /// The panic's message.
        message: String,
    },
    /// A plain `map` was given a stream ([`from_stream`](crate::from_stream)):
    /// it submits every input at once, so it cannot wait for a stream's.
    #[error(
        "A plain `map` submits every input at once and cannot read '{param}' from a stream: \
         map it with `BatchTask::map` or `BatchTask::stream`, which read a stream as they go."
    )]
    StreamNeedsBatchTask {
        /// The parameter given a stream.
        param: &'static str,
    },
}

/// A value passed unchanged to every call of a `map`, as Prefect's `unmapped`.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// fn add(a: i64, b: i64) -> i64 {
///     a + b
/// }
///
/// #[flow]
/// fn offset() -> Vec<i64> {
///     add.map(unmapped(1), vec![2, 3, 4, 5]).unwrap().results().unwrap()
/// }
///
/// assert_eq!(offset().unwrap(), vec![3, 4, 5, 6]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped<T>(pub T);

/// Wraps a value so that `map` passes it to every call instead of iterating it.
pub fn unmapped<T>(value: T) -> Unmapped<T> {
    Unmapped(value)
}

/// One argument of a `map`, after it has been taken apart.
pub enum Column<T> {
    /// One value per input.
    Mapped(std::vec::IntoIter<T>),
    /// One upstream run per input, whose value each run takes.
    Futures(std::vec::IntoIter<PrefectFuture<T>>),
    /// The same value for every input, cloned for each.
    Unmapped {
        /// The value.
        value: T,
        /// How it is cloned.
        clone: fn(&T) -> T,
    },
    /// The value of one upstream run, cloned for every input.
    UnmappedFuture(SharedValue<T>),
    /// One value per input, as an async stream gives them
    /// ([`from_stream`](crate::stream_args::from_stream)): read as the map
    /// goes, its length known when it ends.
    Streamed(BoxStream<'static, T>),
}

impl<T> Column<T> {
    /// How many inputs it holds, if it holds one per input and knows how many.
    fn known_len(&self) -> Option<usize> {
        match self {
            Column::Mapped(values) => Some(values.len()),
            Column::Futures(futures) => Some(futures.len()),
            Column::Unmapped { .. } | Column::UnmappedFuture(..) | Column::Streamed(_) => None,
        }
    }

    fn is_mapped(&self) -> bool {
        !matches!(self, Column::Unmapped { .. } | Column::UnmappedFuture(..))
    }

    fn is_streamed(&self) -> bool {
        matches!(self, Column::Streamed(_))
    }

    /// The next input's value, from a column that is not streamed, whose
    /// length was checked: read once per input, under the map's lock, so
    /// with no poll.
    fn next_input(&mut self) -> Input<T> {
        self.next_at_hand()
            .expect("lengths are checked before the columns are zipped, and none is streamed")
    }

    /// The next input's value: `Ready(None)` once a mapped column has run out.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Option<Input<T>>> {
        match self {
            Column::Streamed(values) => values
                .poll_next_unpin(cx)
                .map(|value| value.map(Input::Value)),
            _ => Poll::Ready(self.next_at_hand()),
        }
    }

    /// The next input's value from a column at hand: `None` once a mapped
    /// column has run out, and from a streamed one.
    fn next_at_hand(&mut self) -> Option<Input<T>> {
        match self {
            Column::Mapped(values) => values.next().map(Input::Value),
            Column::Futures(futures) => futures.next().map(Input::Future),
            Column::Unmapped { value, clone } => Some(Input::Value(clone(value))),
            Column::UnmappedFuture(shared) => Some(Input::Shared(shared.clone())),
            Column::Streamed(_) => None,
        }
    }
}

/// Something that can stand for one parameter in `map`: any iterable of the
/// parameter's type, a [`PrefectFutureList`] of it, [`Unmapped`] of a
/// value or of a [`PrefectFuture`] of one, or (in `BatchTask::map`) an
/// async stream of them ([`from_stream`](crate::stream_args::from_stream)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot stand for a `{T}` parameter in `map`",
    label = "expected an iterable of `{T}`, a `PrefectFutureList<{T}>`, or `unmapped(value)` of one `{T}`"
)]
pub trait MapArg<T> {
    /// Takes the argument apart into a column of inputs.
    fn into_column(self) -> Column<T>;
}

impl<T, I> MapArg<T> for I
where
    I: IntoIterator<Item = T>,
{
    fn into_column(self) -> Column<T> {
        Column::Mapped(self.into_iter().collect::<Vec<T>>().into_iter())
    }
}

impl<T: Clone + Send> MapArg<T> for Unmapped<T> {
    fn into_column(self) -> Column<T> {
        Column::Unmapped {
            value: self.0,
            clone: T::clone,
        }
    }
}

impl<T> MapArg<T> for PrefectFutureList<T> {
    fn into_column(self) -> Column<T> {
        Column::Futures(self.into_inner().into_iter())
    }
}

impl<T: Clone> MapArg<T> for Unmapped<PrefectFuture<T>> {
    fn into_column(self) -> Column<T> {
        Column::UnmappedFuture(SharedValue {
            run: self.0.into_shared(),
            clone: T::clone,
        })
    }
}

/// The whole argument list of a `map`: a tuple with one [`MapArg`] per parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the arguments of a `map` over a task taking `{Args}`",
    label = "pass one argument per task parameter, in order, as a tuple",
    note = "each argument is an iterable of its parameter's type, or `unmapped(value)`",
    note = "a task with one parameter takes a one-element tuple: `map_tuple((inputs,))`"
)]
pub trait MapArgs<Args> {
    /// Checks the arguments against the rules and zips them into one tuple of
    /// arguments per input, in input order.
    fn into_inputs(self, param_names: &'static [&'static str]) -> Result<Zipped<Args>, MapError>;
}

/// The parameter that ran out first, and one that had more, of some mapped
/// columns read in step: `None` unless some ended and some did not.
pub(crate) fn unequal(
    ended: &[bool],
    mapped: &[bool],
    after: usize,
    param_names: &[&'static str],
) -> Option<MapError> {
    let name = |i: usize| param_names.get(i).copied().unwrap_or("?");
    let first_ended = (0..ended.len()).find(|&i| mapped[i] && ended[i])?;
    let longer = (0..ended.len()).find(|&i| mapped[i] && !ended[i])?;
    Some(MapError::UnequalLengths {
        ended: name(first_ended),
        after,
        longer: name(longer),
    })
}

/// Checks the column lengths. As in Prefect, the mapped parameters are
/// compared in the sorted order of their names: the first sets the length,
/// and the first that differs is named.
pub(crate) fn common_len(
    lengths: &[Option<usize>],
    param_names: &[&'static str],
) -> Result<usize, MapError> {
    let name = |i: usize| param_names.get(i).copied().unwrap_or("?");
    let mut mapped: Vec<(&'static str, usize)> = lengths
        .iter()
        .enumerate()
        .filter_map(|(i, len)| len.map(|len| (name(i), len)))
        .collect();
    mapped.sort_by_key(|&(param, _)| param);
    let Some(&(expected_param, expected)) = mapped.first() else {
        return Err(MapError::NoMappedIterable);
    };
    match mapped.iter().find(|&&(_, len)| len != expected) {
        Some(&(param, actual)) => Err(MapError::LengthMismatch {
            expected_param,
            expected,
            param,
            actual,
        }),
        None => Ok(expected),
    }
}

impl MapArgs<()> for () {
    fn into_inputs(self, _param_names: &'static [&'static str]) -> Result<Zipped<()>, MapError> {
        Err(MapError::NoMappedIterable)
    }
}

/// Zips columns that are read as the map goes (each with `is_mapped` and
/// `poll_input`) into a stream of each input's arguments, ending with
/// [`MapError::UnequalLengths`] if some mapped columns run out before others.
macro_rules! zip_lazily {
    ($param_names:expr; $($col:ident $value:ident $param:ident),+) => {{
        let mapped = [$($col.is_mapped()),+];
        let mut taken = 0;
        let mut ended = false;
        // Each column's value for the next input, and whether it ran
        // out: a value waits here while another column's is not ready.
        $(#[allow(non_snake_case)] let mut $value: (Option<$crate::inputs::Input<$param>>, bool) = (None, false);)+
        futures::stream::poll_fn(move |cx| {
            use std::task::Poll;
            if ended {
                return Poll::Ready(None);
            }
            let mut pending = false;
            $(
                if $value.0.is_none() && !$value.1 {
                    match $col.poll_input(cx) {
                        Poll::Ready(Some(value)) => $value.0 = Some(value),
                        Poll::Ready(None) => $value.1 = true,
                        Poll::Pending => pending = true,
                    }
                }
            )+
            if pending {
                return Poll::Pending;
            }
            let all_ready = true $(&& $value.0.is_some())+;
            if all_ready && let ($(Some($value),)+) = ($($value.0.take(),)+) {
                taken += 1;
                let args = $crate::inputs::IntoRunArgs::into_run_args(($($value,)+));
                return Poll::Ready(Some(Ok(args)));
            }
            ended = true;
            let missing = [$($value.1),+];
            Poll::Ready($crate::args::unequal(&missing, &mapped, taken, $param_names).map(Err))
        })
    }};
}
pub(crate) use zip_lazily;

macro_rules! impl_map_args {
    ($($arg:ident $param:ident $col:ident $value:ident),+) => {
        impl<$($param: Send + 'static,)+ $($arg: MapArg<$param>,)+> MapArgs<($($param,)+)> for ($($arg,)+) {
            fn into_inputs(self, param_names: &'static [&'static str]) -> Result<Zipped<($($param,)+)>, MapError> {
                #[allow(non_snake_case)]
                let ($($col,)+) = self;
                $(#[allow(non_snake_case)] let mut $col = $col.into_column();)+
                if !(false $(|| $col.is_streamed())+) {
                    let n = common_len(&[$($col.known_len()),+], param_names)?;
                    // Zipped as they are read: no second list of every input.
                    let clones = false $(|| !$col.is_mapped())+;
                    let next = move || ($($col.next_input(),)+).into_run_args();
                    return Ok(Zipped::Listed(ListedInputs::new(n, Box::new(next), clones)));
                }
                // The lengths known now are checked now; a stream's when it ends.
                let known = [$($col.known_len()),+];
                if known.iter().any(Option::is_some) {
                    common_len(&known, param_names)?;
                }
                let streamed = [$($col.is_streamed()),+];
                let param = streamed
                    .iter()
                    .position(|&streamed| streamed)
                    .and_then(|i| param_names.get(i).copied())
                    .unwrap_or("?");
                let inputs = zip_lazily!(param_names; $($col $value $param),+);
                Ok(Zipped::Streamed {
                    inputs: Box::pin(inputs),
                    param,
                })
            }
        }
    };
}

/// Invokes `$impl!` for each arity from 1 to 8 parameters, with names for
/// each parameter's argument type, value type, column and pending value.
macro_rules! for_each_arity {
    ($impl:ident) => {
        $impl!(M0 T0 c0 v0);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2, M3 T3 c3 v3);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2, M3 T3 c3 v3, M4 T4 c4 v4);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2, M3 T3 c3 v3, M4 T4 c4 v4, M5 T5 c5 v5);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2, M3 T3 c3 v3, M4 T4 c4 v4, M5 T5 c5 v5, M6 T6 c6 v6);
        $impl!(M0 T0 c0 v0, M1 T1 c1 v1, M2 T2 c2 v2, M3 T3 c3 v3, M4 T4 c4 v4, M5 T5 c5 v5, M6 T6 c6 v6, M7 T7 c7 v7);
    };
}
pub(crate) use for_each_arity;

for_each_arity!(impl_map_args);

#[cfg(test)]
mod tests;
