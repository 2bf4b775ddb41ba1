//! The sources an answer cites, by their numbers in brackets.

use std::collections::BTreeSet;

use super::Source;

/// What an answer cites.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cited {
    /// The sources cited, in the order first cited; every one was given to the model.
    pub sources: Vec<Source>,
    /// Numbers cited that name no source given: invented, and dropped.
    pub invented: Vec<usize>,
}

/// The sources `answer` cites as `[n]`, `[n, m]`, `[n][m]` or `[n-m]`; numbers of no source in
/// `given` are dropped (and listed as invented). Brackets holding anything but numbers (an
/// array index in code, a link) cite nothing.
pub fn cite(answer: &str, given: &[Source]) -> Cited {
    let mut order: Vec<usize> = Vec::new();
    let mut invented = BTreeSet::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        rest = &after[close + 1..];
        let Some(numbers) = numbers_in(inside) else { continue };
        for number in numbers {
            if (1..=given.len()).contains(&number) {
                if !order.contains(&number) {
                    order.push(number);
                }
            } else {
                invented.insert(number);
            }
        }
    }
    Cited {
        sources: order.into_iter().map(|number| given[number - 1].clone()).collect(),
        invented: invented.into_iter().collect(),
    }
}

/// The numbers of `1, 2`, `3-5` or `7`; `None` when anything else is inside.
fn numbers_in(inside: &str) -> Option<Vec<usize>> {
    let mut numbers = Vec::new();
    for part in inside.split([',', ';']).map(str::trim) {
        if let Some((from, to)) = part.split_once('-') {
            let (from, to): (usize, usize) = (from.trim().parse().ok()?, to.trim().parse().ok()?);
            // A range of citations is short; anything longer is not one.
            if to < from || to - from > 20 {
                return None;
            }
            numbers.extend(from..=to);
        } else {
            numbers.push(part.parse().ok()?);
        }
        // Sources are numbered from 1: `[0]` is an index in code, not a citation.
        if numbers.contains(&0) {
            return None;
        }
    }
    (!numbers.is_empty()).then_some(numbers)
}
