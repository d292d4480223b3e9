//! The two revisits of decided cells, not in the reference: settling the first cells
//! ([`Settings::settle`](super::Settings::settle)) and polishing the finished image ([`Settings::polish`](super::Settings::polish)). Both read
//! decided cells against the others with [`Arpg::predict`](crate::model::Arpg::predict) and
//! draw again from the image's own token stream.

use super::{known_then, Generation, StepOutput, POLISH_BELOW, POLISH_GROUPS, SETTLE_SWEEPS};
use crate::error::Result;
use crate::sampler::{self, stream, Rng};

impl Generation {
    /// Groups per polishing pass: [`POLISH_GROUPS`], fewer when fewer cells are generated.
    pub(super) fn polish_groups(&self) -> usize {
        POLISH_GROUPS.min(self.state.orders.first().map_or(0, Vec::len))
    }

    /// Settles the early cells when it is time (see [`Settings::settle`](super::Settings::settle)): at the first step
    /// that finds at least `settle` cells decided (or at the last step, when fewer ever are).
    /// Each decided cell is drawn again given the known cells and every other decided cell, in
    /// generation order; then the KV cache is rebuilt from the new tokens. Returns the revised
    /// cells of each image. An edit with at least `settle` known cells needs none: its first
    /// cells are drawn with that much context already.
    pub(super) fn settle_if_due(&mut self) -> Result<Vec<Vec<(usize, u32, f32)>>> {
        let b = self.state.classes.len();
        let decided: usize = self.state.tokens_per_step[..self.state.step].iter().sum();
        let last = self.state.step + 1 == self.state.tokens_per_step.len();
        let known = self.known_cells(0).len();
        if self.state.settled
            || known >= self.state.settings.settle
            || self.state.settings.settle == 0
            || decided == 0
            || (decided < self.state.settings.settle && !last)
        {
            return Ok(vec![Vec::new(); b]);
        }
        self.state.settled = true;
        let known: Vec<Vec<usize>> = (0..b).map(|i| self.known_cells(i)).collect();
        let scale = self.state.cfg_scales[self.state.step] as f32;
        let draw = self.state.settings.draw();
        for _ in 0..SETTLE_SWEEPS {
            for k in 0..decided {
                let cells: Vec<Vec<usize>> = self
                    .state
                    .orders
                    .iter()
                    .zip(&known)
                    .map(|(o, known)| known_then(known, o[..k].iter().chain(&o[k + 1..decided])))
                    .collect();
                let queries: Vec<Vec<usize>> =
                    self.state.orders.iter().map(|o| vec![o[k]]).collect();
                let (logits, _) = self.predict(&cells, &queries, scale)?;
                for i in 0..b {
                    let d = sampler::draw(&logits[i][0], &draw, &mut self.state.token_rngs[i]);
                    self.state.tokens[i][queries[i][0]] = Some(d.token);
                    self.state.probs[i][queries[i][0]] = d.prob;
                }
            }
        }
        // Rebuild the cache from everything but the pending pending (the previous step's cells,
        // fed by this step as usual, with their new tokens).
        let pending = self.state.tokens_per_step[self.state.step - 1];
        self.rebuild_cache(decided - pending)?;
        self.state.pending = (0..b)
            .map(|i| {
                self.state.orders[i][decided - pending..decided]
                    .iter()
                    .map(|&c| Ok((self.token_of(i, c)?, c as u32 + 1)))
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<_>>()?;
        (0..b)
            .map(|i| {
                self.state.orders[i][..decided]
                    .iter()
                    .map(|&c| Ok((c, self.token_of(i, c)?, self.state.probs[i][c])))
                    .collect()
            })
            .collect()
    }

    /// One polishing step (see [`Settings::polish`](super::Settings::polish)): the cells of one group are read against
    /// all the others, and each whose token has become improbable is drawn again.
    pub(super) fn polish_step(&mut self) -> Result<StepOutput> {
        let b = self.state.classes.len();
        let groups = self.polish_groups();
        let round = self.state.step - self.state.tokens_per_step.len();
        let (pass, group) = (round / groups, round % groups);
        let mut queries = Vec::with_capacity(b);
        let mut cells = Vec::with_capacity(b);
        for (i, order) in self.state.orders.iter().enumerate() {
            let mut shuffled = order.clone();
            let seed = sampler::image_seed(self.state.polish_seed, i as u64);
            Rng::stream(seed, stream::POLISH, pass as u64).shuffle(&mut shuffled);
            let u = shuffled.len();
            let chosen = shuffled[group * u / groups..(group + 1) * u / groups].to_vec();
            let known = self.known_cells(i);
            let rest = known_then(&known, order.iter().filter(|c| !chosen.contains(c)));
            queries.push(chosen);
            cells.push(rest);
        }
        let scale = self.state.cfg_scales.last().copied().unwrap_or(1.0);
        let (combined, logits) = self.predict(&cells, &queries, scale as f32)?;
        let draw = self.state.settings.draw();
        let mut revised = vec![Vec::new(); b];
        for i in 0..b {
            for (j, &cell) in queries[i].iter().enumerate() {
                let current = self.token_of(i, cell)? as usize;
                let probs = sampler::processed(&combined[i][j], &draw);
                if probs.get(current).copied().unwrap_or(0.0) < POLISH_BELOW {
                    let d = sampler::draw(&combined[i][j], &draw, &mut self.state.token_rngs[i]);
                    self.state.tokens[i][cell] = Some(d.token);
                    self.state.probs[i][cell] = d.prob;
                    revised[i].push((cell, d.token, d.prob));
                }
            }
        }
        let out = StepOutput {
            step: self.state.step,
            total_steps: self.total_steps(),
            cells: vec![Vec::new(); b],
            tokens: vec![Vec::new(); b],
            probs: vec![Vec::new(); b],
            cfg_scale: scale,
            logits,
            revised,
        };
        self.state.step += 1;
        Ok(out)
    }
}
