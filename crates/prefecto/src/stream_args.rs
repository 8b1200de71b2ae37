//! The arguments of a streaming map (`BatchTask::stream`): one per task
//! parameter, each an iterator of inputs read lazily, an async [`Stream`]
//! of them ([`from_stream`]), or [`unmapped`].
//!
//! Unlike `map`'s arguments, nothing is collected: the map reads one input
//! when it has room for one, so an iterator over a file, a database cursor
//! or `0..10_000_000` is never held in memory, and a stream (a channel's
//! receiver, rows arriving from a server) is read as its items come, without
//! blocking a thread while it has none. Lengths are compared before the map
//! starts when every mapped argument knows its length exactly (`size_hint`),
//! and otherwise when the first one runs out.
//!
//! [`unmapped`]: crate::unmapped

use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use crate::args::{Column, MapArg, MapError, Unmapped, common_len, for_each_arity, zip_lazily};
use crate::inputs::{Input, RunArgs};

/// The inputs of a streaming map, zipped, in input order. An item is an
/// error once, if one mapped argument ran out before another; none follows.
pub type InputStream<Args> = BoxStream<'static, Result<RunArgs<Args>, MapError>>;

/// One argument of a streaming map, taken apart.
pub enum LazyColumn<T> {
    /// One value per input, read when the map takes the input.
    Mapped(Box<dyn Iterator<Item = T> + Send>),
    /// One value per input, as the stream gives them.
    Streamed(BoxStream<'static, T>),
    /// The same value for every input, cloned on demand.
    Unmapped(Box<dyn FnMut() -> T + Send>),
}

/// An async [`Stream`] as one argument of [`BatchTask::stream`] or
/// [`BatchTask::map`]: one value per input, read as the stream gives them.
/// Made by [`from_stream`].
///
/// [`BatchTask::stream`]: crate::concurrency::BatchTask::stream
/// [`BatchTask::map`]: crate::concurrency::BatchTask::map
pub struct FromStream<S>(S);

/// Maps over the items of an async [`Stream`]: the map reads one when it
/// has room for one, and waits for the next without holding a thread.
///
/// ```
/// use prefecto::prelude::*;
///
/// #[task]
/// async fn double(x: u64) -> u64 {
///     x * 2
/// }
///
/// #[flow]
/// async fn doubles() -> Vec<u64> {
///     let (sender, receiver) = futures::channel::mpsc::channel(8);
///     tokio::spawn(async move {
///         let mut sender = sender;
///         for x in 0..5u64 {
///             futures::SinkExt::send(&mut sender, x).await.unwrap();
///         }
///     });
///     let batch = BatchTask::new(double, 2).unwrap();
///     let mut stream = batch.stream(from_stream(receiver)).unwrap();
///     let mut doubles = Vec::new();
///     while let Some(run) = stream.next_async().await {
///         doubles.push(run.result.unwrap());
///     }
///     doubles
/// }
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(doubles().await.unwrap(), vec![0, 2, 4, 6, 8]);
/// # });
/// ```
pub fn from_stream<S: Stream + Send + 'static>(stream: S) -> FromStream<S> {
    FromStream(stream)
}

impl<T, S: Stream<Item = T> + Send + 'static> StreamArg<T> for FromStream<S> {
    fn into_lazy_column(self) -> LazyColumn<T> {
        LazyColumn::Streamed(self.0.boxed())
    }
}

/// In `BatchTask::map`, read as the map goes, as in `stream`. A plain
/// `map` submits every input at once, so it refuses it
/// ([`MapError::StreamNeedsBatchTask`]).
impl<T, S: Stream<Item = T> + Send + 'static> MapArg<T> for FromStream<S> {
    fn into_column(self) -> Column<T> {
        Column::Streamed(self.0.boxed())
    }
}

impl<T> LazyColumn<T> {
    /// `Some(None)` for a mapped column of unknown length; `None` if unmapped.
    fn exact_len(&self) -> Option<Option<usize>> {
        let hint = self.size_hint()?;
        Some(match hint {
            (low, Some(high)) if low == high => Some(low),
            _ => None,
        })
    }

    /// The upper bound of a mapped column's length, if it has one.
    fn upper_bound(&self) -> Option<usize> {
        self.size_hint().and_then(|(_, high)| high)
    }

    /// A mapped column's `size_hint`; `None` if unmapped.
    fn size_hint(&self) -> Option<(usize, Option<usize>)> {
        match self {
            LazyColumn::Mapped(values) => Some(values.size_hint()),
            LazyColumn::Streamed(values) => Some(values.size_hint()),
            LazyColumn::Unmapped(_) => None,
        }
    }

    fn is_mapped(&self) -> bool {
        !matches!(self, LazyColumn::Unmapped(_))
    }

    /// The next value: `Ready(None)` once a mapped column has run out.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Poll<Option<Input<T>>> {
        let value = match self {
            LazyColumn::Mapped(values) => Poll::Ready(values.next()),
            LazyColumn::Streamed(values) => values.poll_next_unpin(cx),
            LazyColumn::Unmapped(make) => Poll::Ready(Some(make())),
        };
        value.map(|value| value.map(Input::Value))
    }
}

/// Something that can stand for one parameter in a streaming map: any
/// iterable of the parameter's type whose iterator can move to the map's
/// threads, or [`Unmapped`] of a value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot stand for a `{T}` parameter in `stream`",
    label = "expected an iterable of `{T}` (its iterator `Send + 'static`), `from_stream(stream)` of `{T}`s, or `unmapped(value)` of one `{T}`",
    note = "a stream reads its inputs while it runs, so it owns its iterators: pass `vec.into_iter()`, not `&vec`"
)]
pub trait StreamArg<T> {
    /// Takes the argument apart into a lazy column.
    fn into_lazy_column(self) -> LazyColumn<T>;
}

impl<T, I> StreamArg<T> for I
where
    I: IntoIterator<Item = T>,
    I::IntoIter: Send + 'static,
{
    fn into_lazy_column(self) -> LazyColumn<T> {
        LazyColumn::Mapped(Box::new(self.into_iter()))
    }
}

impl<T: Clone + Send + 'static> StreamArg<T> for Unmapped<T> {
    fn into_lazy_column(self) -> LazyColumn<T> {
        let value = self.0;
        LazyColumn::Unmapped(Box::new(move || value.clone()))
    }
}

/// The whole argument list of a streaming map: a tuple with one
/// [`StreamArg`] per parameter.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the arguments of a `stream` over a task taking `{Args}`",
    label = "pass one argument per task parameter, in order, as a tuple",
    note = "each argument is an iterable of its parameter's type, or `unmapped(value)`"
)]
pub trait StreamArgs<Args> {
    /// Checks what can be checked now (at least one mapped argument; equal
    /// lengths where they are known) and zips the columns lazily. Gives the
    /// number of inputs too, when every mapped iterator knows it.
    fn into_input_stream(
        self,
        param_names: &'static [&'static str],
    ) -> Result<(InputStream<Args>, Option<usize>), MapError>;
}

/// The length every mapped column shares, if all know theirs; the error if
/// two known lengths differ, or if nothing is mapped.
fn known_len(
    lengths: &[Option<Option<usize>>],
    param_names: &[&'static str],
) -> Result<Option<usize>, MapError> {
    if lengths.iter().all(Option::is_none) {
        return Err(MapError::NoMappedIterable);
    }
    // Unknown lengths are left out of the comparison, as unmapped ones are.
    let known: Vec<Option<usize>> = lengths.iter().map(|len| len.flatten()).collect();
    if known.iter().all(Option::is_none) {
        return Ok(None);
    }
    let len = common_len(&known, param_names)?;
    let all_known = lengths.iter().all(|len| !matches!(len, Some(None)));
    Ok(all_known.then_some(len))
}

/// Zipped inputs that remember the bound their columns had: a map that
/// stops reads the rest only when it is bounded (an endless iterator is
/// left unread).
struct Bounded<I> {
    inputs: I,
    /// At most this many inputs left.
    left: Option<usize>,
}

impl<I: Stream + Unpin> Stream for Bounded<I> {
    type Item = I::Item;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<I::Item>> {
        let item = self.inputs.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = item {
            self.left = self.left.map(|left| left.saturating_sub(1));
        }
        item
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, self.left)
    }
}

macro_rules! impl_stream_args {
    ($($arg:ident $param:ident $col:ident $value:ident),+) => {
        impl<$($param: Send + 'static,)+ $($arg: StreamArg<$param>,)+> StreamArgs<($($param,)+)> for ($($arg,)+) {
            fn into_input_stream(
                self,
                param_names: &'static [&'static str],
            ) -> Result<(InputStream<($($param,)+)>, Option<usize>), MapError> {
                #[allow(non_snake_case)]
                let ($($col,)+) = self;
                $(#[allow(non_snake_case)] let mut $col = $col.into_lazy_column();)+
                let total = known_len(&[$($col.exact_len()),+], param_names)?;
                let left = [$($col.upper_bound()),+].into_iter().flatten().min();
                let inputs = zip_lazily!(param_names; $($col $value $param),+);
                Ok((Box::pin(Bounded { inputs: Box::pin(inputs), left }), total))
            }
        }
    };
}

for_each_arity!(impl_stream_args);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::unmapped;

    const AB: &[&str] = &["a", "b"];

    fn values<A>(stream: InputStream<A>) -> Vec<Result<A, MapError>> {
        futures::executor::block_on_stream(stream)
            .map(|item| {
                item.map(|args| match args {
                    RunArgs::Ready(args) => args,
                    RunArgs::Waiting(_) => panic!("streams take values only"),
                })
            })
            .collect()
    }

    #[test]
    fn zips_lazily_and_knows_exact_lengths() {
        let (stream, total) = (0..3, vec![10, 11, 12]).into_input_stream(AB).unwrap();
        assert_eq!(total, Some(3));
        assert_eq!(values(stream), [Ok((0, 10)), Ok((1, 11)), Ok((2, 12))]);
    }

    #[test]
    fn an_iterator_of_unknown_length_is_read_to_its_end() {
        let (stream, total) = (unmapped(1u8), (0..5).filter(|n| n % 2 == 0))
            .into_input_stream(AB)
            .unwrap();
        assert_eq!(total, None);
        assert_eq!(
            stream.size_hint().1,
            Some(5),
            "bounded: a stop reads the rest"
        );
        assert_eq!(values(stream), [Ok((1, 0)), Ok((1, 2)), Ok((1, 4))]);
    }

    #[test]
    fn known_unequal_lengths_are_refused_before_anything_runs() {
        let Err(err) = (0..4, 0..3).into_input_stream(AB) else {
            panic!("unequal known lengths are refused");
        };
        assert_eq!(
            err.to_string(),
            "Expected all iterables to be of length 4 like 'a'. 'b' is length 3."
        );
    }

    #[test]
    fn unknown_unequal_lengths_end_the_inputs_with_an_error() {
        let (stream, total) = ((0..4).filter(|_| true), 0..2)
            .into_input_stream(AB)
            .unwrap();
        assert_eq!(total, None);
        let items = values(stream);
        assert_eq!(items.len(), 3, "two inputs, then the error, then nothing");
        assert_eq!(
            items[2],
            Err(MapError::UnequalLengths {
                ended: "b",
                after: 2,
                longer: "a"
            })
        );
    }

    #[test]
    fn nothing_mapped_is_refused() {
        let Err(err) = (unmapped(1), unmapped(2)).into_input_stream(AB) else {
            panic!("nothing to map over is refused");
        };
        assert_eq!(err, MapError::NoMappedIterable);
    }

    #[test]
    fn an_endless_iterator_is_fine_until_read() {
        let (stream, total) = ((0u64..).map(|n| n * 2),)
            .into_input_stream(&["x"])
            .unwrap();
        assert_eq!(total, None);
        assert_eq!(
            stream.size_hint().1,
            None,
            "no end known: a stop leaves it unread"
        );
        let mut stream = futures::executor::block_on_stream(stream);
        assert!(matches!(stream.next(), Some(Ok(RunArgs::Ready((0,))))));
        assert!(matches!(stream.next(), Some(Ok(RunArgs::Ready((2,))))));
    }
}
