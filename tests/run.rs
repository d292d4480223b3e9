//! A run (`arpg_core::run::Run`): one step() reporting each decided cell once, one finish()
//! returning the made images with what their PNGs record; the same tokens as the generation it
//! wraps.

use std::collections::HashSet;

use arpg_core::generator::{Generation, KnownCells, Request, Settings};
use arpg_core::order::Order;
use arpg_core::pair::{ModelPair, ModelSpec};
use arpg_core::provenance::{BatchPlace, Task};
use arpg_core::run::Run;
use arpg_core::sampler::image_seed;

#[test]
fn a_batch_run_reports_each_cell_once_and_makes_what_the_generation_makes() {
    let models = ModelPair::load(&ModelSpec::shipped()).expect("the shipped model");
    let g = models.grid();
    let mut settings = models
        .arpg
        .sampling
        .apply(&Settings::default())
        .expect("recommended settings");
    settings.seed = 42;
    settings.steps = 8;
    let mut run =
        Run::generate(&models, Some(3), settings.clone(), Order::Random, None, 2).expect("run");
    assert_eq!(run.unknown(), g * g);
    let mut first = HashSet::new();
    let mut revised = 0;
    while let Some(p) = run.step().expect("step") {
        for d in &p.decided {
            assert!(d.step == p.step && d.row < g && d.col < g);
            if d.revision {
                revised += 1;
                assert!(
                    first.contains(&(d.row, d.col)),
                    "a revision of an undecided cell"
                );
            } else {
                assert!(
                    first.insert((d.row, d.col)),
                    "({}, {}) decided twice",
                    d.row,
                    d.col
                );
            }
        }
    }
    assert_eq!(first.len(), g * g, "every cell decided once");
    assert!(revised > 0, "the shipped settings settle and polish");
    let (made, gen) = run.finish(&models).expect("finish");
    assert!(gen.is_some(), "a generation comes back to fork or resume");
    assert_eq!(made.len(), 2);
    for (i, m) in made.iter().enumerate() {
        // Image i is the single image of its own seed.
        let mut own = settings.clone();
        own.seed = image_seed(42, i as u64);
        let single = Generation::new(
            &models.arpg.model,
            &Request {
                classes: vec![Some(3)],
                settings: own.clone(),
                order: Order::Random.mode(&arpg_core::canvas::TokenCanvas::empty(g, g)),
                known: KnownCells::Nothing,
            },
        )
        .expect("generation")
        .run()
        .expect("run");
        assert_eq!(m.canvas.tokens().expect("whole"), single[0]);
        assert_eq!(m.settings.seed, own.seed);
        assert_eq!(m.size, [g * models.patch(); 2]);
        assert_eq!(m.rgb.len(), g * g * models.patch() * models.patch() * 3);
        assert_eq!(m.provenance.batch, Some(BatchPlace { seed: 42, index: i }));
        assert_eq!(m.provenance.task, Task::Generate);
        let meta = m.metadata(&models).expect("metadata");
        assert_eq!(meta.class, Some(3));
        assert_eq!(meta.tokenizer.as_deref(), Some(models.vq.identity()));
        assert_eq!(
            meta.transformer.as_deref(),
            Some(models.arpg.identity.as_str())
        );
    }
}
