//! Schedule tests: the ORIGINAL plateau / reload / stop semantics of docs/method.md §8.2–§8.4, and
//! PyTorch closed forms for the fixed schedules.

use pyramid_train::schedule::*;

/// Feeds `metrics` after `initial`; returns all decisions (stops early if the schedule stops).
fn drive(cfg: PlateauConfig, lr: f64, initial: f64, metrics: &[f64]) -> (Plateau, Vec<Decision>) {
    let mut p = Plateau::new(cfg, vec![lr]).unwrap();
    let d0 = p.initial(initial).unwrap();
    assert!(d0.improved && !d0.cut && d0.stop.is_none());
    let mut out = Vec::new();
    for m in metrics {
        let d = p.step(*m).unwrap();
        let stop = d.stop.is_some();
        out.push(d);
        if stop {
            break;
        }
    }
    (p, out)
}
fn epochs_where(ds: &[Decision], f: impl Fn(&Decision) -> bool) -> Vec<u64> {
    ds.iter().filter(|d| f(d)).map(|d| d.epoch).collect()
}

#[test]
fn stage2_that_never_improves_lasts_exactly_30_epochs() {
    // docs/method.md §8.3 step 6 / §14 item 10. PyTorch check (modern ReduceLROnPlateau, same counting):
    // s = ReduceLROnPlateau(opt, 'max', factor=0.1, patience=5, threshold=1e-20, eps=1e-9)
    // s.step(50.0); then s.step(40.0) × 36 → cuts at epochs [6, 12, 18, 24, 30], final lr 1.0000000000000005e-09
    let (p, ds) = drive(PlateauConfig::stage2(), 1e-4, 50.0, &[40.0; 100]);
    assert_eq!(ds.len(), 30);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![6, 12, 18, 24, 30]);
    assert_eq!(
        epochs_where(&ds, |d| d.reload_best),
        vec![6, 12, 18, 24, 30]
    );
    assert!(ds.iter().all(|d| !d.improved));
    let last = ds.last().unwrap();
    assert_eq!(
        last.stop,
        Some(StopReason::LrBelow {
            lr: 1.0000000000000005e-09,
            bound: 1e-8
        })
    );
    // After 4 cuts lr = 1.0000000000000004e-08, not < 1e-8: no stop at epoch 24.
    assert_eq!(ds[23].lrs, vec![1.0000000000000004e-08]);
    assert_eq!(p.check_load(), 5);
    assert_eq!(p.best_saved(), Some(50.0));
}

#[test]
fn stage1_stops_after_two_fruitless_cuts() {
    // §8.2 step 7: check_load == 2 → epoch 12, lr 1e-6.
    let (p, ds) = drive(PlateauConfig::stage1(), 1e-4, 10.0, &[11.0; 100]);
    assert_eq!(ds.len(), 12);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![6, 12]);
    assert_eq!(epochs_where(&ds, |d| d.reload_best), vec![6, 12]);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::FruitlessCuts { check_load: 2 })
    );
    assert_eq!(p.lrs(), &[1.0000000000000002e-06]);
}

#[test]
fn stage1_equal_loss_is_not_an_improvement() {
    // threshold 1e-20 rel ⇒ strict: repeating the best value counts as a bad epoch.
    let (_, ds) = drive(PlateauConfig::stage1(), 1e-4, 10.0, &[10.0; 100]);
    assert_eq!(ds.len(), 12);
    assert!(ds.iter().all(|d| !d.improved));
}

#[test]
fn cut_on_sixth_consecutive_bad_epoch_and_improvement_resets_count() {
    // Improvements at 1..=3; bad 4..=9 → cut at 9; improve at 10 (check_load back to 0);
    // bad 11..=16 → cut at 16; bad 17..=22 → cut at 22, second fruitless cut → stop (stage 1).
    let mut m = vec![9.0, 8.0, 7.0];
    m.extend([7.5; 6]);
    m.push(6.0);
    m.extend([6.5; 20]);
    let (p, ds) = drive(PlateauConfig::stage1(), 1e-4, 10.0, &m);
    assert_eq!(epochs_where(&ds, |d| d.improved), vec![1, 2, 3, 10]);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![9, 16, 22]);
    assert_eq!(epochs_where(&ds, |d| d.reload_best), vec![9, 16, 22]);
    assert_eq!(ds.len(), 22);
    assert_eq!(p.best_saved(), Some(6.0));
    assert_eq!(p.lrs(), &[1.0000000000000002e-07]);

    // A bad run of five followed by an improvement never cuts.
    let mut m = Vec::new();
    for i in 0..5 {
        m.extend([20.0; 5]);
        m.push(9.0 - i as f64);
    }
    let (_, ds) = drive(PlateauConfig::stage1(), 1e-4, 10.0, &m);
    assert!(ds.iter().all(|d| !d.cut && d.stop.is_none()));
    assert_eq!(ds.len(), 30);
}

#[test]
fn stage1_stops_when_lr_drops_below_1e_7() {
    // Each cycle: 6 bad epochs (cut + reload, check_load 1), then one improvement (check_load 0).
    // Cuts at 6, 13, 20, 27; after the 4th lr = 1.0000000000000004e-08 < 1e-7 → stop at 27.
    let mut m = Vec::new();
    for i in 0..10 {
        m.extend([100.0; 6]);
        m.push(9.0 - i as f64);
    }
    let (p, ds) = drive(PlateauConfig::stage1(), 1e-4, 10.0, &m);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![6, 13, 20, 27]);
    assert_eq!(ds.len(), 27);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::LrBelow {
            lr: 1.0000000000000004e-08,
            bound: 1e-7
        })
    );
    assert_eq!(p.check_load(), 1);
    assert_eq!(p.improvements(), 3);
}

#[test]
fn stage2_with_an_improvement_stops_at_two_fruitless_cuts() {
    // Improvement at epoch 1 (first_save), then nothing: cuts at 7 and 13 → stop at 13.
    let mut m = vec![60.0];
    m.extend([55.0; 50]);
    let (_, ds) = drive(PlateauConfig::stage2(), 1e-4, 50.0, &m);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![7, 13]);
    assert_eq!(ds.len(), 13);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::FruitlessCuts { check_load: 2 })
    );
}

#[test]
fn stage2_improvement_late_still_needs_two_more_fruitless_cuts() {
    // No improvement for 2 cuts (check_load 2 but first_save false → continue), improvement at
    // epoch 13 resets check_load; then cuts at 19 and 25 → stop at 25.
    let mut m = vec![40.0; 12];
    m.push(70.0);
    m.extend([40.0; 50]);
    let (_, ds) = drive(PlateauConfig::stage2(), 1e-4, 50.0, &m);
    assert_eq!(epochs_where(&ds, |d| d.cut), vec![6, 12, 19, 25]);
    assert_eq!(ds.len(), 25);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::FruitlessCuts { check_load: 2 })
    );
}

#[test]
fn single_stage_threshold_and_stop() {
    // §8.4: improvement iff acc > best·(1 + 1e-4); stop on check_load == 2 without first-save.
    // best 50 → 50.004 is not an improvement (50·1.0001 = 50.005), 50.006 is.
    let (p, ds) = drive(PlateauConfig::single_stage(), 1e-4, 50.0, &[50.004, 50.006]);
    assert_eq!(epochs_where(&ds, |d| d.improved), vec![2]);
    assert_eq!(p.best_saved(), Some(50.006));
    assert_eq!(p.num_bad_epochs(), 0);

    let (_, ds) = drive(PlateauConfig::single_stage(), 1e-4, 50.0, &[50.004; 100]);
    assert_eq!(ds.len(), 12);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::FruitlessCuts { check_load: 2 })
    );
}

#[test]
fn gram_direct_stage2_strict_save_with_relative_scheduler() {
    // §9.2: scheduler threshold 1e-4 rel, save test strict. 50 → 50.001 saves (strict) but is a
    // bad epoch for the scheduler; with five more bad epochs the cut lands on an epoch that
    // did improve (strict), so no reload there.
    let mut m = vec![40.0; 5];
    m.push(50.001);
    let (p, ds) = drive(PlateauConfig::gram_direct_stage2(), 1e-4, 50.0, &m);
    let last = ds.last().unwrap();
    assert!(last.improved && last.cut && !last.reload_best);
    assert_eq!(p.best_saved(), Some(50.001));
    assert_eq!(p.scheduler_best(), Some(50.0));
}

#[test]
fn cut_smaller_than_eps_is_ignored() {
    // 1e-9 → 1e-10 changes lr by 9e-10 < eps 1e-9: ignored, no reload; the bad-epoch counter
    // still resets, so the next attempt is 6 epochs later.
    let cfg = PlateauConfig {
        stop: StopRule::Never,
        ..PlateauConfig::stage2()
    };
    let (p, ds) = drive(cfg, 1e-9, 50.0, &[40.0; 13]);
    assert!(ds.iter().all(|d| !d.cut && !d.reload_best));
    assert_eq!(p.lrs(), &[1e-9]);
    assert_eq!(p.num_bad_epochs(), 1);
    assert_eq!(p.cuts(), 0);
}

#[test]
fn max_epochs_caps_a_stage() {
    let cfg = PlateauConfig {
        max_epochs: Some(4),
        ..PlateauConfig::stage1()
    };
    let (p, ds) = drive(cfg, 1e-4, 10.0, &[9.0, 8.0, 7.0, 6.0, 5.0]);
    assert_eq!(ds.len(), 4);
    assert_eq!(
        ds.last().unwrap().stop,
        Some(StopReason::MaxEpochs { epochs: 4 })
    );
    let mut p = p;
    assert!(p.step(1.0).is_err());
}

#[test]
fn multiple_groups_cut_together() {
    let mut p = Plateau::new(PlateauConfig::stage2(), vec![1e-4, 1e-3]).unwrap();
    p.initial(50.0).unwrap();
    let mut last = None;
    for _ in 0..6 {
        last = Some(p.step(10.0).unwrap());
    }
    let d = last.unwrap();
    assert!(d.cut);
    assert_eq!(d.lrs, vec![1e-4 * 0.1, 1e-3 * 0.1]);
}

#[test]
fn serde_round_trip_resumes_identically() {
    let metrics: Vec<f64> = (0..40)
        .map(|i| [9.0, 9.5, 8.0, 9.9][i % 4] - i as f64 * 0.01)
        .collect();
    let mut a = Plateau::new(PlateauConfig::stage1(), vec![1e-4]).unwrap();
    a.initial(10.0).unwrap();
    for m in &metrics[..17] {
        a.step(*m).unwrap();
    }
    let json = serde_json::to_string(&a).unwrap();
    let mut b: Plateau = serde_json::from_str(&json).unwrap();
    assert_eq!(a, b);
    for m in &metrics[17..] {
        let (da, db) = (a.step(*m), b.step(*m));
        match (da, db) {
            (Ok(x), Ok(y)) => assert_eq!(x, y),
            (Err(_), Err(_)) => break,
            _ => panic!("diverged"),
        }
    }
}

#[test]
fn config_serde() {
    let c: PlateauConfig =
        serde_json::from_str(r#"{"mode":"max","stop":"stage2","eps":1e-9}"#).unwrap();
    assert_eq!(c, PlateauConfig::stage2());
    let c: PlateauConfig = serde_json::from_str(r#"{"mode":"min","stop":"stage1"}"#).unwrap();
    assert_eq!(c, PlateauConfig::stage1());
    assert!(serde_json::from_str::<PlateauConfig>(r#"{"mode":"min"}"#).is_err());
    assert!(serde_json::from_str::<PlateauConfig>(
        r#"{"mode":"min","stop":"stage1","patiense":3}"#
    )
    .is_err());
    let s: ScheduleConfig = serde_json::from_str(
        r#"{"kind":"plateau","mode":"max","stop":"single_stage","threshold":1e-4,"eps":1e-9,"save_test":"scheduler"}"#,
    )
    .unwrap();
    assert_eq!(s, ScheduleConfig::Plateau(PlateauConfig::single_stage()));
    let back: ScheduleConfig = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

#[test]
fn mode_is_optional_in_config_and_derived_by_with_mode() {
    // Without `mode` a plateau config parses, with the mode unresolved and not written back.
    let c: PlateauConfig = serde_json::from_str(r#"{"stop":"stage2","eps":1e-9}"#).unwrap();
    assert_eq!(
        c,
        PlateauConfig {
            mode: None,
            ..PlateauConfig::stage2()
        }
    );
    assert!(!serde_json::to_string(&c).unwrap().contains(r#""mode""#));
    let s: ScheduleConfig = serde_json::from_str(r#"{"kind":"plateau","stop":"stage1"}"#).unwrap();
    assert_eq!(s.mode(), None);
    let resolved = s.with_mode(Mode::Min).unwrap();
    assert_eq!(resolved, ScheduleConfig::Plateau(PlateauConfig::stage1()));
    assert_eq!(resolved.mode(), Some(Mode::Min));
    assert!(serde_json::to_string(&resolved)
        .unwrap()
        .contains(r#""mode":"min""#));

    // An explicit mode that agrees is kept; one that contradicts the loss is an error naming both.
    let explicit = ScheduleConfig::Plateau(PlateauConfig::stage2());
    assert_eq!(explicit.with_mode(Mode::Max).unwrap(), explicit);
    let err = explicit.with_mode(Mode::Min).unwrap_err().to_string();
    assert!(err.contains(r#"mode = "max""#), "{err}");
    assert!(err.contains("monitored by min"), "{err}");
    assert!(err.contains("a loss") && err.contains("accuracy"), "{err}");
    let fixed: ScheduleConfig =
        serde_json::from_str(r#"{"kind":"constant","mode":"min","max_epochs":3}"#).unwrap();
    let err = fixed.with_mode(Mode::Max).unwrap_err().to_string();
    assert!(
        err.contains(r#"mode = "min""#) && err.contains("monitored by max"),
        "{err}"
    );
    assert_eq!(Mode::Min.as_str(), "min");
    assert_eq!(Mode::Max.as_str(), "max");
}

#[test]
fn building_without_a_resolved_mode_is_an_error() {
    let unresolved = "mode not resolved; call with_mode first";
    for json in [
        r#"{"kind":"plateau","stop":"stage2"}"#,
        r#"{"kind":"step","step_size":2,"max_epochs":3}"#,
        r#"{"kind":"multi_step","milestones":[2],"max_epochs":3}"#,
        r#"{"kind":"cosine","t_max":2,"max_epochs":3}"#,
        r#"{"kind":"constant","max_epochs":3}"#,
    ] {
        let cfg: ScheduleConfig = serde_json::from_str(json).unwrap();
        let err = cfg.build(vec![1e-4]).unwrap_err().to_string();
        assert!(err.contains(unresolved), "{json}: {err}");
        assert!(cfg.with_mode(Mode::Max).unwrap().build(vec![1e-4]).is_ok());
    }
    let cfg = PlateauConfig {
        mode: None,
        ..PlateauConfig::stage1()
    };
    let err = Plateau::new(cfg, vec![1e-4]).unwrap_err().to_string();
    assert!(err.contains(unresolved), "{err}");
    let cfg: ScheduleConfig =
        serde_json::from_str(r#"{"kind":"constant","max_epochs":3}"#).unwrap();
    let err = Fixed::new(cfg, vec![1e-4]).unwrap_err().to_string();
    assert!(err.contains(unresolved), "{err}");

    // A saved state whose config lost its mode errors on use instead of guessing one.
    let mut p = Plateau::new(PlateauConfig::stage1(), vec![1e-4]).unwrap();
    p.initial(10.0).unwrap();
    let json = serde_json::to_string(&p)
        .unwrap()
        .replace(r#""mode":"min","#, "");
    let mut q: Plateau = serde_json::from_str(&json).unwrap();
    assert!(q.mode().is_err());
    assert!(q.step(9.0).unwrap_err().to_string().contains(unresolved));
    assert_eq!(q.epoch(), 0);
    let mut f = serde_json::from_str::<ScheduleConfig>(r#"{"kind":"constant","max_epochs":3}"#)
        .unwrap()
        .with_mode(Mode::Min)
        .unwrap()
        .build(vec![1e-4])
        .unwrap();
    f.initial(1.0).unwrap();
    let json = serde_json::to_string(&f)
        .unwrap()
        .replace(r#""mode":"min","#, "");
    let mut g: Schedule = serde_json::from_str(&json).unwrap();
    assert!(g.step(0.5).unwrap_err().to_string().contains(unresolved));
    assert_eq!(g.epoch(), 0);
}

#[test]
fn schedule_validate_names_the_field() {
    let check = |json: &str, want: &str| {
        let cfg: ScheduleConfig = serde_json::from_str(json).unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
        // `build` validates too, even with the mode resolved.
        let built = cfg.with_mode(Mode::Max).unwrap().build(vec![0.1]);
        assert!(built.unwrap_err().to_string().contains(want), "{json}");
    };
    check(
        r#"{"kind":"step","step_size":0,"max_epochs":3}"#,
        "schedule: step_size must be > 0, got 0",
    );
    check(
        r#"{"kind":"step","step_size":2,"gamma":0,"max_epochs":3}"#,
        "schedule: gamma must be finite and > 0, got 0",
    );
    check(
        r#"{"kind":"multi_step","milestones":[2,5],"gamma":-0.5,"max_epochs":3}"#,
        "schedule: gamma must be finite and > 0, got -0.5",
    );
    check(
        r#"{"kind":"multi_step","milestones":[2,5,5],"max_epochs":9}"#,
        "schedule: milestones must be strictly increasing",
    );
    check(
        r#"{"kind":"multi_step","milestones":[5,2],"max_epochs":9}"#,
        "schedule: milestones must be strictly increasing",
    );
    check(
        r#"{"kind":"cosine","t_max":0,"max_epochs":3}"#,
        "schedule: t_max must be > 0, got 0",
    );
    check(
        r#"{"kind":"cosine","t_max":4,"eta_min":-0.001,"max_epochs":3}"#,
        "schedule: eta_min must be finite and >= 0, got -0.001",
    );
    check(
        r#"{"kind":"constant","max_epochs":0}"#,
        "schedule: max_epochs must be > 0, got 0",
    );
    check(
        r#"{"kind":"cosine","t_max":4,"max_epochs":0}"#,
        "schedule: max_epochs must be > 0, got 0",
    );
    check(
        r#"{"kind":"plateau","stop":"stage1","max_epochs":0}"#,
        "plateau: max_epochs must be > 0, got 0",
    );
    check(
        r#"{"kind":"plateau","stop":"stage1","factor":1.5}"#,
        "plateau: factor must be in (0, 1), got 1.5",
    );

    // Non-finite values cannot come from JSON; build them directly.
    let cosine = ScheduleConfig::Cosine(Cosine {
        t_max: 4,
        eta_min: f64::NAN,
        mode: None,
        max_epochs: 4,
    });
    assert!(cosine
        .validate()
        .unwrap_err()
        .to_string()
        .contains("eta_min"));
    let step = ScheduleConfig::Step(StepLr {
        step_size: 1,
        gamma: f64::INFINITY,
        mode: None,
        max_epochs: 4,
    });
    assert!(step.validate().unwrap_err().to_string().contains("gamma"));

    // Valid configs of every kind, mode resolved or not.
    for json in [
        r#"{"kind":"plateau","stop":"stage2","max_epochs":1}"#,
        r#"{"kind":"step","step_size":1,"gamma":1.0,"mode":"min","max_epochs":1}"#,
        r#"{"kind":"multi_step","milestones":[],"max_epochs":1}"#,
        r#"{"kind":"multi_step","milestones":[0,1,7],"max_epochs":1}"#,
        r#"{"kind":"cosine","t_max":1,"eta_min":0,"max_epochs":1}"#,
        r#"{"kind":"constant","max_epochs":1}"#,
    ] {
        let cfg: ScheduleConfig = serde_json::from_str(json).unwrap();
        cfg.validate().unwrap();
    }
    for p in [
        PlateauConfig::stage1(),
        PlateauConfig::stage2(),
        PlateauConfig::single_stage(),
        PlateauConfig::gram_direct_stage2(),
    ] {
        ScheduleConfig::Plateau(p).validate().unwrap();
    }
}

fn fixed_lrs(cfg: &str, n: usize, lr: f64) -> Vec<f64> {
    let cfg: ScheduleConfig = serde_json::from_str(cfg).unwrap();
    assert_eq!(cfg.mode(), None);
    let mut s = cfg.with_mode(Mode::Max).unwrap().build(vec![lr]).unwrap();
    let mut out = vec![s.initial(0.0).unwrap().lrs[0]];
    for i in 0..n {
        out.push(s.step(i as f64).unwrap().lrs[0]);
    }
    out
}
fn assert_seq(a: &[f64], b: &[f64]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-15, "{a:?} vs {b:?}");
    }
}

#[test]
fn fixed_schedules_match_pytorch() {
    // def seq(make, n=8, lr=0.1):
    //     p = torch.zeros(1, requires_grad=True); opt = torch.optim.SGD([p], lr=lr); s = make(opt)
    //     out = [opt.param_groups[0]['lr']]
    //     for _ in range(n): opt.step(); s.step(); out.append(opt.param_groups[0]['lr'])
    //     return out
    // seq(lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5))
    assert_seq(
        &fixed_lrs(
            r#"{"kind":"step","step_size":3,"gamma":0.5,"max_epochs":100}"#,
            8,
            0.1,
        ),
        &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025],
    );
    // seq(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[2,5], gamma=0.1))
    assert_seq(
        &fixed_lrs(
            r#"{"kind":"multi_step","milestones":[2,5],"max_epochs":100}"#,
            8,
            0.1,
        ),
        &[0.1, 0.1, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001],
    );
    // seq(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6, eta_min=0.001))
    assert_seq(
        &fixed_lrs(
            r#"{"kind":"cosine","t_max":6,"eta_min":0.001,"max_epochs":100}"#,
            8,
            0.1,
        ),
        &[
            0.1,
            0.09336825748732973,
            0.07525000000000001,
            0.0505,
            0.025750000000000012,
            0.007631742512670284,
            0.001,
            0.007631742512670284,
            0.025750000000000002,
        ],
    );
    assert_seq(
        &fixed_lrs(r#"{"kind":"constant","max_epochs":100}"#, 3, 0.1),
        &[0.1; 4],
    );
}

#[test]
fn fixed_schedule_tracks_best_and_stops_at_max_epochs() {
    let cfg: ScheduleConfig =
        serde_json::from_str(r#"{"kind":"step","step_size":2,"mode":"max","max_epochs":3}"#)
            .unwrap();
    let mut s = cfg.build(vec![1.0]).unwrap();
    assert!(s.initial(10.0).unwrap().improved);
    let d1 = s.step(12.0).unwrap();
    assert!(d1.improved && !d1.cut && d1.stop.is_none());
    let d2 = s.step(11.0).unwrap();
    assert!(!d2.improved && d2.cut && !d2.reload_best);
    let d3 = s.step(13.0).unwrap();
    assert_eq!(d3.stop, Some(StopReason::MaxEpochs { epochs: 3 }));
    assert_eq!(s.best(), Some(13.0));
    assert!(s.step(1.0).is_err());
    let json = serde_json::to_string(&s).unwrap();
    let back: Schedule = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
