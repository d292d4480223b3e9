//! The order in which a job's unknown cells are decided, as users choose it (random, raster,
//! near-known first), and the priority levels the near-known order and the app's priority brush
//! give the sampler ([`OrderMode::Priority`]).

use serde::{Deserialize, Serialize};

use crate::canvas::TokenCanvas;
use crate::error::{Error, Result};
use crate::generator::OrderMode;

/// The order in which a job's unknown cells are generated, as users choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Order {
    /// A fresh random permutation (what the model was trained on).
    #[default]
    Random,
    /// Row by row.
    Raster,
    /// Cells nearest the known content first, random among equals (edits grow from their
    /// context); the same as random when nothing is known.
    NearKnown,
}

impl Order {
    pub const ALL: [Order; 3] = [Order::Random, Order::Raster, Order::NearKnown];

    pub fn name(self) -> &'static str {
        match self {
            Order::Random => "random",
            Order::Raster => "raster",
            Order::NearKnown => "near-known",
        }
    }

    /// The sampler's order for `canvas` (whose known cells the near-known order grows from).
    pub fn mode(self, canvas: &TokenCanvas) -> OrderMode {
        match self {
            Order::Random => OrderMode::Random,
            Order::Raster => OrderMode::Raster,
            Order::NearKnown if canvas.unknown_count() < canvas.cells.len() => {
                OrderMode::Priority(near_known_priority(canvas))
            }
            Order::NearKnown => OrderMode::Random,
        }
    }
}

impl std::str::FromStr for Order {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Order::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "unknown order `{s}` (expected random, raster or near-known)"
                ))
            })
    }
}

impl std::fmt::Display for Order {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Priority levels for [`Order::NearKnown`]: 255 minus the 4-neighbour distance of each cell to
/// the nearest known cell (known cells 255).
pub fn near_known_priority(canvas: &TokenCanvas) -> Vec<u8> {
    let (rows, cols) = (canvas.rows, canvas.cols);
    let mut dist = vec![u32::MAX; rows * cols];
    let mut queue = std::collections::VecDeque::new();
    for (i, cell) in canvas.cells.iter().enumerate() {
        if cell.is_some() {
            dist[i] = 0;
            queue.push_back(i);
        }
    }
    while let Some(i) = queue.pop_front() {
        let (r, c) = (i / cols, i % cols);
        let near = [
            (r > 0).then(|| i - cols),
            (r + 1 < rows).then(|| i + cols),
            (c > 0).then(|| i - 1),
            (c + 1 < cols).then(|| i + 1),
        ];
        for j in near.into_iter().flatten() {
            if dist[j] == u32::MAX {
                dist[j] = dist[i] + 1;
                queue.push_back(j);
            }
        }
    }
    dist.iter()
        .map(|&d| 255u32.saturating_sub(d.min(255)) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_known_grows_from_the_known_cells() {
        let mut canvas = TokenCanvas::empty(1, 4);
        canvas.cells[0] = Some(1);
        assert_eq!(near_known_priority(&canvas), vec![255, 254, 253, 252]);
        assert_eq!(
            Order::NearKnown.mode(&TokenCanvas::empty(2, 2)),
            OrderMode::Random
        );
        assert_eq!("near-known".parse::<Order>().ok(), Some(Order::NearKnown));
        assert!("zigzag".parse::<Order>().is_err());
    }
}
