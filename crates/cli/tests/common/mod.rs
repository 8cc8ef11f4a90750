//! What several CLI tests share: a tiny experiment that trains in seconds.

/// A tiny experiment on the embedded data: 16 train and 8 test images per class, 32×32
/// grayscale, widths ÷16, batch norm, Adam, `teacher_epochs` for the teacher and one epoch per
/// other stage. `header` sets the top-level keys (name, seed or seeds, schemes, methods,
/// levels); sections go after it.
pub fn tiny_config(header: &str, teacher_epochs: u32) -> String {
    format!(
        r#"{header}

[data]
dataset = "embedded"
batch_size = 32
eval_batch_size = 200
train_per_class = 16
test_per_class = 8

[model]
input_size = 32
width_div = 16
in_channels = 1
batch_norm = true

[teacher]
source = "train"
[teacher.recipe]
optimizer = {{ kind = "adam", lr = 3e-3 }}
schedule = {{ kind = "constant", max_epochs = {teacher_epochs} }}

[stage1]
optimizer = {{ kind = "adam", lr = 1e-3 }}
schedule = {{ kind = "constant", max_epochs = 1 }}

[stage2]
optimizer = {{ kind = "adam", lr = 1e-3 }}
schedule = {{ kind = "constant", max_epochs = 1 }}

[scratch]
optimizer = {{ kind = "adam", lr = 1e-3 }}
schedule = {{ kind = "constant", max_epochs = 1 }}
"#
    )
}
