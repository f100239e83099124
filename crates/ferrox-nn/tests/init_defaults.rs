//! Layers start from the parameters MLX draws: after the same seed, `Linear::new` & co. give
//! MLX's initial weights (scripts/make_nn_fixtures.py → fixtures/init_mlx.safetensors), so a
//! model ported from MLX trains from the same start.

mod support;

use ferrox::{self as fx};
use ferrox_nn::layers::{Conv1d, Conv2d, Embedding, Gru, Linear, Lstm, MultiHeadAttention, Rnn};
use ferrox_nn::Module;
use support::{assert_close, fixture, under};

#[test]
fn default_initialization_matches_mlx() {
    let f = fixture("init_mlx.safetensors");
    type Make = fn() -> Box<dyn Module>;
    let makers: Vec<(&str, Make)> = vec![
        ("linear", || Box::new(Linear::new(5, 3, true).unwrap())),
        ("embedding", || Box::new(Embedding::new(10, 4).unwrap())),
        ("conv1d", || Box::new(Conv1d::new(3, 4, 3, 1, 0, 1, 1, true).unwrap())),
        ("conv2d", || Box::new(Conv2d::new(2, 4, (3, 2), (1, 1), (0, 0), (1, 1), 1, true).unwrap())),
        ("mha", || Box::new(MultiHeadAttention::new(8, 2, false).unwrap())),
        ("rnn", || Box::new(Rnn::new(3, 5, true).unwrap())),
        ("gru", || Box::new(Gru::new(3, 5, true).unwrap())),
        ("lstm", || Box::new(Lstm::new(3, 5, true).unwrap())),
    ];
    for (i, (name, make)) in makers.iter().enumerate() {
        fx::random::seed(100 + i as u64);
        let got = make().parameters();
        let want = under(&f, &format!("{name}."));
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}: names");
        for (k, w) in &want {
            assert_close(&got[k], w, 1e-6, &format!("{name}.{k}"));
        }
    }
}
