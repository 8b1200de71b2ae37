//! A value current on one thread for the length of a call: what the flow
//! run of a sync body, and a `Prefecto::scope`, are.

use std::cell::RefCell;
use std::thread::LocalKey;

/// Runs `f` with `value` in the thread-local `slot`, and puts back what was
/// there before when `f` returns or panics.
pub(crate) fn with_value<T: 'static, R>(
    slot: &'static LocalKey<RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static> {
        slot: &'static LocalKey<RefCell<Option<T>>>,
        previous: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            self.slot.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let previous = slot.with(|current| current.borrow_mut().replace(value));
    let _restore = Restore { slot, previous };
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static CURRENT: RefCell<Option<u8>> = const { RefCell::new(None) };
    }

    #[test]
    fn the_previous_value_comes_back_even_after_a_panic() {
        with_value(&CURRENT, 1, || {
            let inner = std::panic::catch_unwind(|| {
                with_value(&CURRENT, 2, || {
                    assert_eq!(CURRENT.with(|c| *c.borrow()), Some(2));
                    panic!("inside");
                })
            });
            assert!(inner.is_err());
            assert_eq!(CURRENT.with(|c| *c.borrow()), Some(1));
        });
        assert_eq!(CURRENT.with(|c| *c.borrow()), None);
    }
}
