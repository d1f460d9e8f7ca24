//! Unit and property tests of the configuration and of routing.

use super::*;
use proptest::prelude::*;

fn id(n: u8) -> NodeId {
    format!("{:040x}", n as u128 + 0xabc)
}

fn node(n: u8, replica_of: Option<u8>) -> Node {
    Node {
        id: id(n),
        ip: "127.0.0.1".into(),
        port: 7000 + n as u16,
        bus_port: 17000 + n as u16,
        replica_of: replica_of.map(id),
        config_epoch: 0,
    }
}

fn range(a: u16, b: u16) -> SlotRange {
    SlotRange::new(a, b).unwrap()
}

/// Three primaries splitting the slots, and a replica of the first.
fn three() -> Config {
    let mut c = Config::new();
    for n in 0..3 {
        c.apply(&Change::AddNode(node(n, None))).unwrap();
    }
    c.apply(&Change::AddNode(node(3, Some(0)))).unwrap();
    for (n, r) in [
        (0, range(0, 5460)),
        (1, range(5461, 10922)),
        (2, range(10923, 16383)),
    ] {
        c.apply(&Change::AssignSlots {
            node: id(n),
            ranges: vec![r],
        })
        .unwrap();
    }
    c
}

/// SET-CONFIG-EPOCH as Redis: only a node alone, with config epoch 0; the configuration's epoch
/// follows it up and never goes back.
#[test]
fn a_config_epoch_is_set_by_hand_only_on_a_fresh_node_alone() {
    let mut c = Config::new();
    c.apply(&Change::AddNode(node(0, None))).unwrap();
    c.apply(&Change::AssignSlots {
        node: id(0),
        ranges: vec![range(0, 16383)],
    })
    .unwrap();
    assert_eq!(c.node(&id(0)).unwrap().config_epoch, 0);
    let set = |epoch| Change::SetConfigEpoch { node: id(0), epoch };
    assert_eq!(
        c.apply(&Change::SetConfigEpoch {
            node: id(1),
            epoch: 3
        }),
        Err(ChangeError::UnknownNode(id(1)))
    );
    c.apply(&set(42)).unwrap();
    assert_eq!(c.node(&id(0)).unwrap().config_epoch, 42);
    assert_eq!(c.epoch(), 43);
    let before = c.clone();
    assert_eq!(c.apply(&set(7)), Err(ChangeError::ConfigEpochNonZero));
    assert_eq!(c, before);
    assert_eq!(
        ChangeError::ConfigEpochNonZero.to_string(),
        "Node config epoch is already non-zero"
    );
    // A smaller epoch on a fresh node alone leaves the configuration's epoch where it was.
    let mut d = Config::new();
    d.apply(&Change::AddNode(node(0, None))).unwrap();
    let e = d.epoch();
    d.apply(&set(0)).unwrap();
    assert_eq!(d.epoch(), e + 1);
    // A node that knows another is refused, whatever its epoch.
    let mut t = three();
    let before = t.clone();
    assert_eq!(t.apply(&set(9)), Err(ChangeError::KnowsOtherNodes));
    assert_eq!(t, before);
    assert_eq!(
        ChangeError::KnowsOtherNodes.to_string(),
        "The user can assign a config epoch only when the node does not know any other node."
    );
}

#[test]
fn slots_have_one_owner_and_busy_slots_are_refused() {
    let mut c = three();
    assert_eq!(c.slots_assigned(), SLOTS);
    assert_eq!(c.size(), 3);
    assert_eq!(c.owner(5461).unwrap().id, id(1));
    assert_eq!(c.ranges_of(&id(2)), vec![range(10923, 16383)]);
    let before = c.clone();
    assert_eq!(
        c.apply(&Change::AssignSlots {
            node: id(1),
            ranges: vec![range(100, 100)]
        }),
        Err(ChangeError::SlotBusy(100))
    );
    assert_eq!(c, before, "a refused change changes nothing");
    assert_eq!(
        c.apply(&Change::AssignSlots {
            node: id(3),
            ranges: vec![range(0, 0)]
        }),
        Err(ChangeError::NotAPrimary(id(3)))
    );
    assert_eq!(
        ChangeError::SlotBusy(100).to_string(),
        "Slot 100 is already busy"
    );
}

#[test]
fn a_migration_moves_ownership_in_one_change() {
    let mut c = three();
    c.apply(&Change::BeginMigration {
        to: id(1),
        ranges: vec![range(0, 9)],
    })
    .unwrap();
    assert_eq!(c.owner(5).unwrap().id, id(0), "the source keeps serving");
    assert_eq!(c.migrating_to(5).unwrap().id, id(1));
    let epoch = c.epoch();
    c.apply(&Change::FinishMigration {
        ranges: vec![range(0, 9)],
    })
    .unwrap();
    assert_eq!(c.owner(5).unwrap().id, id(1));
    assert!(c.migrating_to(5).is_none());
    assert_eq!(c.node(&id(1)).unwrap().config_epoch, epoch + 1);
    // Asked again by the other side of the move: nothing changes; cancelling a slot that does
    // not move neither.
    let before = c.clone();
    c.apply(&Change::CancelMigration {
        ranges: vec![range(0, 0)],
    })
    .unwrap();
    assert_eq!(c.owner(0), before.owner(0));
    assert_eq!(
        c.apply(&Change::FinishMigration {
            ranges: vec![range(0, 0)]
        }),
        Err(ChangeError::SlotNotMigrating(0))
    );
    c.apply(&Change::BeginMigration {
        to: id(2),
        ranges: vec![range(20, 20)],
    })
    .unwrap();
    c.apply(&Change::BeginMigration {
        to: id(2),
        ranges: vec![range(20, 20)],
    })
    .unwrap();
    assert_eq!(
        c.apply(&Change::BeginMigration {
            to: id(1),
            ranges: vec![range(20, 20)]
        }),
        Err(ChangeError::SlotAlreadyMigrating(20))
    );
    // SETSLOT NODE from every node: the first moves it, the others change nothing.
    for _ in 0..2 {
        c.apply(&Change::SetOwner {
            node: id(2),
            ranges: vec![range(20, 20)],
        })
        .unwrap();
        assert_eq!(c.owner(20).unwrap().id, id(2));
        assert!(c.migrating_to(20).is_none());
    }
}

#[test]
fn an_atomic_move_passes_slots_only_from_their_owner_at_its_epoch() {
    let mut c = three();
    let e0 = c.node(&id(0)).unwrap().config_epoch;
    let mv = |from: u8, ranges: Vec<SlotRange>, from_epoch: u64| Change::MoveSlots {
        from: id(from),
        to: id(1),
        ranges,
        from_epoch,
    };
    let before = c.clone();
    // Not all of the slots belong to node 0.
    assert_eq!(
        c.apply(&mv(0, vec![range(5000, 5470)], e0)),
        Err(ChangeError::SlotNotOwnedBy(5461, id(0)))
    );
    // A move to a replica, or from the owner to itself.
    assert_eq!(
        c.apply(&Change::MoveSlots {
            from: id(0),
            to: id(3),
            ranges: vec![range(0, 9)],
            from_epoch: e0
        }),
        Err(ChangeError::NotAPrimary(id(3)))
    );
    assert_eq!(c, before);
    c.apply(&mv(0, vec![range(0, 99), range(200, 299)], e0))
        .unwrap();
    assert_eq!(c.owner(50).unwrap().id, id(1));
    assert_eq!(c.owner(150).unwrap().id, id(0));
    assert_eq!(c.owner(250).unwrap().id, id(1));
    assert_eq!(c.node(&id(1)).unwrap().config_epoch, c.epoch());
    c.check_invariants();
    // A source that bumped its epoch fences a move prepared before.
    c.apply(&Change::BumpEpoch { node: id(0) }).unwrap();
    assert_eq!(
        c.apply(&mv(0, vec![range(300, 399)], e0)),
        Err(ChangeError::StaleEpoch(id(0)))
    );
    let e1 = c.node(&id(0)).unwrap().config_epoch;
    assert!(e1 > e0);
    c.apply(&mv(0, vec![range(300, 399)], e1)).unwrap();
    // A slot moving the legacy way is not moved atomically as well.
    c.apply(&Change::BeginMigration {
        to: id(2),
        ranges: vec![range(400, 400)],
    })
    .unwrap();
    assert_eq!(
        c.apply(&mv(0, vec![range(400, 400)], e1)),
        Err(ChangeError::SlotAlreadyMigrating(400))
    );
}

#[test]
fn finishing_a_migration_named_twice_in_one_change_moves_each_slot_once() {
    // Found by the Raft simulator: overlapping ranges passed the check and then panicked in
    // apply, on every node that applied the committed entry.
    let mut c = three();
    c.apply(&Change::BeginMigration {
        to: id(1),
        ranges: vec![range(0, 9)],
    })
    .unwrap();
    c.apply(&Change::FinishMigration {
        ranges: vec![range(0, 5), range(3, 9), range(9, 9)],
    })
    .unwrap();
    assert!((0..=9).all(|s| c.owner(s).unwrap().id == id(1) && c.migrating_to(s).is_none()));
    assert_eq!(c.owner(10).unwrap().id, id(0));
}

#[test]
fn a_promoted_replica_takes_its_primarys_slots() {
    let mut c = three();
    c.apply(&Change::Promote { replica: id(3) }).unwrap();
    assert_eq!(c.owner(0).unwrap().id, id(3));
    assert_eq!(c.node(&id(0)).unwrap().replica_of, Some(id(3)));
    assert!(c.node(&id(3)).unwrap().is_primary());
}

#[test]
fn only_an_empty_primary_becomes_a_replica() {
    let mut c = three();
    c.apply(&Change::AddNode(node(4, None))).unwrap();
    c.apply(&Change::Replicate {
        node: id(4),
        primary: id(2),
    })
    .unwrap();
    assert_eq!(c.node(&id(4)).unwrap().replica_of, Some(id(2)));
    assert_eq!(
        c.apply(&Change::Replicate {
            node: id(1),
            primary: id(2)
        }),
        Err(ChangeError::NotEmpty(id(1)))
    );
    assert_eq!(
        c.apply(&Change::Replicate {
            node: id(2),
            primary: id(2)
        }),
        Err(ChangeError::ReplicateSelf)
    );
    assert_eq!(
        c.apply(&Change::Replicate {
            node: id(1),
            primary: id(3)
        }),
        Err(ChangeError::NotAPrimary(id(3)))
    );
}

#[test]
fn a_node_that_serves_slots_cannot_leave() {
    let mut c = three();
    assert_eq!(
        c.apply(&Change::RemoveNode(id(1))),
        Err(ChangeError::NodeInUse(id(1)))
    );
    c.apply(&Change::RemoveNode(id(3))).unwrap();
    assert_eq!(c.nodes().len(), 3);
    assert_eq!(c.owner(16383).unwrap().id, id(2), "indexes stay right");
}

fn no_keys_here() -> Presence {
    Presence {
        present: 0,
        missing: 1,
    }
}

#[test]
fn requests_are_routed_as_redis_cluster_routes_them() {
    let c = three();
    let r = RouteRequest::default();
    let all_here = || Presence {
        present: 1,
        missing: 0,
    };
    assert_eq!(route(&c, &id(0), &[], r, all_here), Route::Local);
    assert_eq!(route(&c, &id(0), &[5, 5], r, all_here), Route::Local);
    assert_eq!(route(&c, &id(0), &[5, 6], r, all_here), Route::CrossSlot);
    assert_eq!(
        route(&c, &id(0), &[6000], r, all_here),
        Route::Moved {
            slot: 6000,
            addr: "127.0.0.1:7001".into()
        }
    );
    // A replica serves reads of its primary's slots to READONLY connections, and nothing else.
    let ro = RouteRequest {
        readonly: true,
        ..r
    };
    assert_eq!(route(&c, &id(3), &[5], ro, all_here), Route::Local);
    assert!(matches!(
        route(
            &c,
            &id(3),
            &[5],
            RouteRequest { write: true, ..ro },
            all_here
        ),
        Route::Moved { .. }
    ));
    assert!(matches!(
        route(&c, &id(3), &[6000], ro, all_here),
        Route::Moved { .. }
    ));
}

#[test]
fn moving_slots_redirect_with_ask_and_split_keys_try_again() {
    let mut c = three();
    c.apply(&Change::BeginMigration {
        to: id(1),
        ranges: vec![range(5, 5)],
    })
    .unwrap();
    let r = RouteRequest::default();
    assert_eq!(
        route(&c, &id(0), &[5], r, no_keys_here),
        Route::Ask {
            slot: 5,
            addr: "127.0.0.1:7001".into()
        }
    );
    let split = || Presence {
        present: 1,
        missing: 1,
    };
    assert_eq!(route(&c, &id(0), &[5, 5], r, split), Route::TryAgain);
    // The target serves the slot only to a client that asked.
    assert!(matches!(
        route(&c, &id(1), &[5], r, no_keys_here),
        Route::Moved { .. }
    ));
    let asking = RouteRequest { asking: true, ..r };
    assert_eq!(route(&c, &id(1), &[5], asking, no_keys_here), Route::Local);
    assert_eq!(route(&c, &id(1), &[5, 5], asking, split), Route::TryAgain);
}

#[test]
fn unowned_slots_take_the_cluster_down() {
    let mut c = three();
    c.apply(&Change::UnassignSlots {
        ranges: vec![range(0, 0)],
    })
    .unwrap();
    let r = RouteRequest::default();
    assert_eq!(route(&c, &id(0), &[0], r, no_keys_here), Route::Unbound);
    assert_eq!(route(&c, &id(0), &[1], r, no_keys_here), Route::Down);
}

/// A change drawn at random over four nodes (some of them refused, which must change nothing).
fn any_change() -> impl Strategy<Value = Change> {
    let n = 0u8..5;
    let ranges = prop::collection::vec((0u16..16384, 0u16..64), 1..3).prop_map(|v| {
        v.into_iter()
            .map(|(a, len)| range(a, (a + len).min(16383)))
            .collect::<Vec<_>>()
    });
    prop_oneof![
        (n.clone(), prop::option::of(0u8..5)).prop_map(|(a, r)| Change::AddNode(node(a, r))),
        n.clone().prop_map(|a| Change::RemoveNode(id(a))),
        (n.clone(), ranges.clone()).prop_map(|(a, ranges)| Change::AssignSlots {
            node: id(a),
            ranges
        }),
        ranges
            .clone()
            .prop_map(|ranges| Change::UnassignSlots { ranges }),
        (n.clone(), ranges.clone())
            .prop_map(|(a, ranges)| Change::BeginMigration { to: id(a), ranges }),
        ranges
            .clone()
            .prop_map(|ranges| Change::FinishMigration { ranges }),
        ranges
            .clone()
            .prop_map(|ranges| Change::CancelMigration { ranges }),
        (n.clone(), ranges.clone()).prop_map(|(a, ranges)| Change::SetOwner {
            node: id(a),
            ranges
        }),
        (n.clone(), n.clone(), ranges, 0u64..4).prop_map(|(a, b, ranges, e)| {
            Change::MoveSlots {
                from: id(a),
                to: id(b),
                ranges,
                from_epoch: e,
            }
        }),
        n.clone().prop_map(|a| Change::BumpEpoch { node: id(a) }),
        (n.clone(), 0u64..1000)
            .prop_map(|(a, epoch)| Change::SetConfigEpoch { node: id(a), epoch }),
        n.clone().prop_map(|a| Change::Promote { replica: id(a) }),
        (n.clone(), n.clone(), 0u64..4, any::<bool>()).prop_map(|(a, b, e, s)| {
            Change::Failover {
                replica: id(a),
                primary: id(b),
                primary_epoch: e,
                in_sync_only: s,
            }
        }),
        (n.clone(), 0u64..4, prop::collection::vec(n.clone(), 0..3)).prop_map(|(p, e, rs)| {
            Change::SetInSync {
                primary: id(p),
                primary_epoch: e,
                replicas: rs.into_iter().map(id).collect(),
            }
        }),
        (n.clone(), n).prop_map(|(a, b)| Change::Replicate {
            node: id(a),
            primary: id(b)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever changes arrive, every applied configuration has one owner (a primary) per
    /// assigned slot, a refused change leaves it as it was, and the epoch only grows (by one
    /// per change; a config epoch set by hand may raise it further), never behind any node's.
    #[test]
    fn every_configuration_keeps_its_invariants(changes in prop::collection::vec(any_change(), 1..60)) {
        let mut c = Config::new();
        for ch in &changes {
            let before = c.clone();
            match c.apply(ch) {
                Ok(()) => match ch {
                    Change::SetConfigEpoch { epoch, .. } => {
                        prop_assert_eq!(c.epoch(), before.epoch().max(*epoch) + 1)
                    }
                    _ => prop_assert_eq!(c.epoch(), before.epoch() + 1),
                },
                Err(_) => prop_assert_eq!(&c, &before),
            }
            c.check_invariants();
            prop_assert!(c.nodes().iter().all(|n| n.config_epoch <= c.epoch()));
            // The change and the configuration survive serde (a Raft log entry, a snapshot).
            let ch_back: Change = serde_json::from_str(&serde_json::to_string(ch).unwrap()).unwrap();
            prop_assert_eq!(&ch_back, ch);
        }
        let c_back: Config = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        prop_assert_eq!(&c_back, &c);
    }
}

#[test]
fn a_configuration_read_back_is_checked_not_trusted() {
    let c = three();
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&json).unwrap(), c);
    // The replica (index 3) made the owner of slot 0.
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["owner"][0] = 3.into();
    let err = serde_json::from_value::<Config>(v.clone()).unwrap_err();
    assert!(err.to_string().contains("slot 0 owned by replica"), "{err}");
    // An owner that is not there, and a table of the wrong length.
    v["owner"][0] = 9.into();
    assert!(serde_json::from_value::<Config>(v.clone()).is_err());
    v["owner"] = serde_json::json!([0, 1]);
    assert!(serde_json::from_value::<Config>(v).is_err());
}

#[test]
fn a_slot_range_read_back_stays_inside_the_table() {
    let ok: SlotRange = serde_json::from_str(r#"{"start":5,"end":16383}"#).unwrap();
    assert_eq!(ok, range(5, 16383));
    assert!(serde_json::from_str::<SlotRange>(r#"{"start":5,"end":16384}"#).is_err());
    assert!(serde_json::from_str::<SlotRange>(r#"{"start":6,"end":5}"#).is_err());
    // So a change naming such a range cannot reach `Config::apply`.
    let bad = r#"{"AssignSlots":{"node":"x","ranges":[{"start":0,"end":65535}]}}"#;
    assert!(serde_json::from_str::<Change>(bad).is_err());
}
