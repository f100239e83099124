//! What fusing saves: the matrix products a forward pass evaluates, counted by the op profiler
//! (one test in this binary, so no other test's ops are counted). A joined q/k/v saves two
//! products per block, a joined gate/up one; tests/llama.rs and tests/quantized.rs check that
//! fused models compute the reference values.

use std::path::Path;

use ferrox::{self as fx, profile, Array};
use ferrox_lm::loader::load_weights;
use ferrox_lm::weights::WeightMap;
use ferrox_lm::{models, LanguageModel, ModelConfig};

fn build(dir: &Path) -> Box<dyn LanguageModel> {
    let config = ModelConfig::load(dir.join("config.json")).unwrap();
    models::build(&config, WeightMap::new(load_weights(dir, None).unwrap())).unwrap()
}

/// The matrix products (dense `Matmul`, quantized `Quantized` ops, and products that
/// evaluation ran with a norm or an add joined in, `JoinedMatmul`) of one forward pass.
fn products(model: &dyn LanguageModel) -> u64 {
    let x = fx::reshape_usize(&Array::from_vec(vec![1i32, 5, 9, 2]), &[1, 4]).unwrap();
    profile::report(true);
    profile::set_enabled(true);
    model.forward(&x, None).unwrap().eval().unwrap();
    profile::set_enabled(false);
    profile::report(true)
        .iter()
        .filter(|r| ["Matmul ", "Quantized ", "JoinedMatmul "].iter().any(|p| r.op.starts_with(p)))
        .map(|r| r.count)
        .sum()
}

/// The products a fused block saves, by layer index.
type Saved = fn(usize) -> u64;

#[test]
fn fused_blocks_run_fewer_products() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // (model, products saved per block: 2 for q/k/v, 1 more for a dense gate/up; per layer)
    let cases: [(&str, Saved); 6] = [
        ("../../models/tiny-llama", |_| 3),
        ("../../models/tiny-qwen2", |_| 3),
        ("../../models/tiny-gemma3", |_| 3),
        ("../../models/tiny-mixtral", |_| 2),
        ("../../models/tiny-qwen3-moe", |l| if l == 1 { 3 } else { 2 }),
        ("tests/fixtures/mlx_quant/tiny-llama-4bit", |_| 3),
    ];
    for (path, saved) in cases {
        let mut model = build(&root.join(path));
        let before = products(model.as_ref());
        model.fuse_projections().unwrap();
        let after = products(model.as_ref());
        let want: u64 = (0..model.num_layers()).map(saved).sum();
        assert_eq!(before - after, want, "{path}: {before} products unfused, {after} fused");
    }
    // Phi-3's checkpoint holds its projections joined already: nothing changes.
    let mut phi = build(&root.join("../../models/tiny-phi3"));
    let before = products(phi.as_ref());
    assert_eq!(phi.fuse_projections().unwrap(), 0);
    assert_eq!(products(phi.as_ref()), before);
}
