//! The arguments of `map`: one per task parameter, each either an iterable of
//! inputs or [`unmapped`] (the same value for every call).
//!
//! Arguments are passed as a tuple in parameter order, so every element type is
//! checked at compile time against the task's signature.

use thiserror::Error;

use crate::future::{PrefectFuture, PrefectFutureList};
use crate::inputs::{Input, IntoRunArgs, RunArgs, SharedValue};

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
pub enum Column<'a, T> {
    /// One value per input.
    Mapped(std::vec::IntoIter<T>),
    /// One upstream run per input, whose value each run takes.
    Futures(std::vec::IntoIter<PrefectFuture<T>>),
    /// The same value for every input, cloned on demand.
    Unmapped(Box<dyn FnMut() -> T + Send + 'a>),
    /// The value of one upstream run, cloned for every input.
    UnmappedFuture(SharedValue<T>),
}

impl<T> Column<'_, T> {
    fn mapped_len(&self) -> Option<usize> {
        match self {
            Column::Mapped(values) => Some(values.len()),
            Column::Futures(futures) => Some(futures.len()),
            Column::Unmapped(_) | Column::UnmappedFuture(..) => None,
        }
    }

    fn next_input(&mut self) -> Input<T> {
        const CHECKED: &str = "lengths are checked before the columns are zipped";
        match self {
            Column::Mapped(values) => Input::Value(values.next().expect(CHECKED)),
            Column::Futures(futures) => Input::Future(futures.next().expect(CHECKED)),
            Column::Unmapped(make) => Input::Value(make()),
            Column::UnmappedFuture(shared) => Input::Shared(shared.clone()),
        }
    }
}

/// Something that can stand for one parameter in `map`: any iterable of the
/// parameter's type, a [`PrefectFutureList`] of it, or [`Unmapped`] of a
/// value or of a [`PrefectFuture`] of one.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot stand for a `{T}` parameter in `map`",
    label = "expected an iterable of `{T}`, a `PrefectFutureList<{T}>`, or `unmapped(value)` of one `{T}`"
)]
pub trait MapArg<T> {
    /// Takes the argument apart into a column of inputs.
    fn into_column<'a>(self) -> Column<'a, T>
    where
        Self: 'a;
}

impl<T, I> MapArg<T> for I
where
    I: IntoIterator<Item = T>,
{
    fn into_column<'a>(self) -> Column<'a, T>
    where
        Self: 'a,
    {
        Column::Mapped(self.into_iter().collect::<Vec<T>>().into_iter())
    }
}

impl<T: Clone + Send> MapArg<T> for Unmapped<T> {
    fn into_column<'a>(self) -> Column<'a, T>
    where
        Self: 'a,
    {
        let value = self.0;
        Column::Unmapped(Box::new(move || value.clone()))
    }
}

impl<T> MapArg<T> for PrefectFutureList<T> {
    fn into_column<'a>(self) -> Column<'a, T>
    where
        Self: 'a,
    {
        Column::Futures(self.into_inner().into_iter())
    }
}

impl<T: Clone> MapArg<T> for Unmapped<PrefectFuture<T>> {
    fn into_column<'a>(self) -> Column<'a, T>
    where
        Self: 'a,
    {
        Column::UnmappedFuture(SharedValue {
            run: self.0.shared,
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
    fn into_inputs(self, param_names: &[&'static str]) -> Result<Vec<RunArgs<Args>>, MapError>;
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
    fn into_inputs(self, _param_names: &[&'static str]) -> Result<Vec<RunArgs<()>>, MapError> {
        Err(MapError::NoMappedIterable)
    }
}

macro_rules! impl_map_args {
    ($($arg:ident $param:ident $col:ident),+) => {
        impl<$($param: Send + 'static,)+ $($arg: MapArg<$param>,)+> MapArgs<($($param,)+)> for ($($arg,)+) {
            fn into_inputs(self, param_names: &[&'static str]) -> Result<Vec<RunArgs<($($param,)+)>>, MapError> {
                #[allow(non_snake_case)]
                let ($($col,)+) = self;
                $(#[allow(non_snake_case)] let mut $col = $col.into_column();)+
                let n = common_len(&[$($col.mapped_len()),+], param_names)?;
                let mut inputs = Vec::with_capacity(n);
                for _ in 0..n {
                    inputs.push(($($col.next_input(),)+).into_run_args());
                }
                Ok(inputs)
            }
        }
    };
}

impl_map_args!(M0 T0 c0);
impl_map_args!(M0 T0 c0, M1 T1 c1);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2, M3 T3 c3);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2, M3 T3 c3, M4 T4 c4);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2, M3 T3 c3, M4 T4 c4, M5 T5 c5);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2, M3 T3 c3, M4 T4 c4, M5 T5 c5, M6 T6 c6);
impl_map_args!(M0 T0 c0, M1 T1 c1, M2 T2 c2, M3 T3 c3, M4 T4 c4, M5 T5 c5, M6 T6 c6, M7 T7 c7);

#[cfg(test)]
mod tests {
    use super::*;

    const AB: &[&str] = &["a", "b"];

    /// The arguments of each input, all of them values.
    fn ready<A>(inputs: Result<Vec<RunArgs<A>>, MapError>) -> Vec<A> {
        let ready = |args| match args {
            RunArgs::Ready(args) => args,
            RunArgs::Waiting(_) => panic!("values only: every input is ready"),
        };
        inputs.unwrap().into_iter().map(ready).collect()
    }

    #[test]
    fn zips_in_order() {
        let inputs = ready((vec![1, 2, 3], vec![4, 5, 6]).into_inputs(AB));
        assert_eq!(inputs, vec![(1, 4), (2, 5), (3, 6)]);
    }

    #[test]
    fn unmapped_is_repeated() {
        let inputs = ready((unmapped(1), 2..6).into_inputs(AB));
        assert_eq!(inputs, vec![(1, 2), (1, 3), (1, 4), (1, 5)]);
    }

    #[test]
    fn several_unmapped_interleaved() {
        let names = &["a", "b", "c", "d", "e"];
        let inputs = ready(
            (
                unmapped("x".to_string()),
                vec![1, 2],
                unmapped(7u8),
                vec!['p', 'q'],
                unmapped(()),
            )
                .into_inputs(names),
        );
        assert_eq!(
            inputs,
            vec![
                ("x".to_string(), 1, 7, 'p', ()),
                ("x".to_string(), 2, 7, 'q', ())
            ]
        );
    }

    #[test]
    fn no_mapped_iterable_is_an_error() {
        let Err(err) = (unmapped(1), unmapped(2)).into_inputs(AB) else {
            panic!("nothing to map over is refused");
        };
        assert_eq!(err, MapError::NoMappedIterable);
        assert_eq!(
            err.to_string(),
            "Must provide at least one non-unmapped iterable."
        );
    }

    #[test]
    fn unequal_lengths_name_the_parameters() {
        let Err(err) = (vec![1, 2, 3, 4], vec![1, 2, 3]).into_inputs(AB) else {
            panic!("unequal lengths are refused");
        };
        assert_eq!(
            err.to_string(),
            "Expected all iterables to be of length 4 like 'a'. 'b' is length 3."
        );
        let Err(err) = (unmapped(0), vec![1], vec![1, 2]).into_inputs(&["x", "y", "z"]) else {
            panic!("unequal lengths are refused");
        };
        assert_eq!(
            err,
            MapError::LengthMismatch {
                expected_param: "y",
                expected: 1,
                param: "z",
                actual: 2
            }
        );
    }

    #[test]
    fn empty_iterables_give_no_inputs() {
        let inputs = ready((Vec::<i32>::new(), Vec::<i32>::new()).into_inputs(AB));
        assert!(inputs.is_empty());
        let inputs = ready((unmapped(1), Vec::<i32>::new()).into_inputs(AB));
        assert!(inputs.is_empty());
    }
}
