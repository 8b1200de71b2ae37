//! Arguments zipped into inputs, and the errors of bad ones.

use super::*;
use crate::inputs::RunArgs;

const AB: &[&str] = &["a", "b"];

/// The arguments of each input, all of them values.
fn ready<A>(inputs: Result<Zipped<A>, MapError>) -> Vec<A> {
    let ready = |args| match args {
        RunArgs::Ready(args) => args,
        RunArgs::Waiting(_) => panic!("values only: every input is ready"),
    };
    match inputs.unwrap() {
        Zipped::Listed(inputs) => inputs.map(ready).collect(),
        Zipped::Streamed { .. } => panic!("no stream: every input at hand"),
    }
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
