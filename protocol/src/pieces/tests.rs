use proptest::prelude::*;

use super::*;

/// Feeds every piece of `frames` to a fresh assembler; what it gives back at the end.
fn round_trip(frames: &[Bytes]) -> Result<Option<Vec<Bytes>>, PieceError> {
    let mut assembler = Assembler::default();
    let mut out = None;
    for (piece, buffers) in split(frames) {
        assert!(out.is_none(), "a message came out before its last piece");
        out = assembler.add(&piece, buffers)?;
    }
    assert!(!assembler.in_progress());
    Ok(out)
}

fn frame(len: usize, fill: u8) -> Bytes {
    Bytes::from(vec![fill; len])
}

#[test]
fn small_messages_travel_whole_and_large_ones_in_pieces_of_at_most_the_piece_size() {
    let small = vec![frame(100, 1), frame(WHOLE_MESSAGE_BYTES - 100, 2)];
    assert!(!needs_pieces(&small));
    let large = vec![
        frame(10, 1),
        frame(3 * PIECE_BYTES + 7, 2),
        frame(0, 3),
        frame(5, 4),
    ];
    assert!(needs_pieces(&large));
    let pieces = split(&large);
    assert_eq!(pieces.len(), 4);
    for (i, (piece, buffers)) in pieces.iter().enumerate() {
        assert_eq!(piece.index as usize, i);
        assert_eq!(piece.count, 4);
        assert_eq!(piece.total, (3 * PIECE_BYTES + 22) as u64);
        assert!(buffers.iter().map(Bytes::len).sum::<usize>() <= PIECE_BYTES);
    }
    assert_eq!(round_trip(&large), Ok(Some(large)));
}

#[test]
fn a_frame_ending_exactly_at_a_piece_boundary_does_not_run_on() {
    let frames = vec![frame(PIECE_BYTES, 1), frame(PIECE_BYTES, 2), frame(1, 3)];
    let pieces = split(&frames);
    assert_eq!(pieces.len(), 3);
    assert!(pieces.iter().all(|(piece, _)| !piece.last_continues));
    assert_eq!(round_trip(&frames), Ok(Some(frames)));
}

#[test]
fn pieces_out_of_order_missing_or_inconsistent_drop_the_message_and_the_next_one_is_whole() {
    let frames = vec![frame(PIECE_BYTES * 2 + 1, 9)];
    let pieces = split(&frames);
    let mut assembler = Assembler::default();
    // Piece 1 first: nothing started.
    assert!(matches!(
        assembler.add(&pieces[1].0, pieces[1].1.clone()),
        Err(PieceError::OutOfOrder { expected: 0, .. })
    ));
    // Piece 0, then piece 2 (1 is lost).
    assert_eq!(assembler.add(&pieces[0].0, pieces[0].1.clone()), Ok(None));
    assert!(matches!(
        assembler.add(&pieces[2].0, pieces[2].1.clone()),
        Err(PieceError::OutOfOrder { expected: 1, .. })
    ));
    assert!(!assembler.in_progress());
    // A piece that changes the message's size.
    assert_eq!(assembler.add(&pieces[0].0, pieces[0].1.clone()), Ok(None));
    let lying = Piece {
        total: pieces[1].0.total + 1,
        ..pieces[1].0.clone()
    };
    assert!(matches!(
        assembler.add(&lying, pieces[1].1.clone()),
        Err(PieceError::Inconsistent { .. })
    ));
    // After all that, the whole message still comes through.
    let mut out = None;
    for (piece, buffers) in pieces {
        out = assembler.add(&piece, buffers).unwrap();
    }
    assert_eq!(out, Some(frames));
}

#[test]
fn sizes_beyond_the_limits_are_refused_before_anything_is_kept() {
    let mut assembler = Assembler::default();
    let huge = Piece {
        index: 0,
        count: 5000,
        total: MAX_MESSAGE_BYTES + 1,
        last_continues: false,
    };
    assert_eq!(
        assembler.add(&huge, vec![frame(1, 0)]),
        Err(PieceError::TooLarge(MAX_MESSAGE_BYTES + 1))
    );
    assert!(!assembler.in_progress());
    let fat = Piece {
        index: 0,
        count: 2,
        total: 2 * PIECE_BYTES as u64 + 2,
        last_continues: false,
    };
    assert_eq!(
        assembler.add(&fat, vec![frame(PIECE_BYTES + 1, 0)]),
        Err(PieceError::PieceTooLarge(PIECE_BYTES + 1))
    );
    let claims_less = Piece {
        index: 0,
        count: 2,
        total: 10,
        last_continues: false,
    };
    assert_eq!(
        assembler.add(&claims_less, vec![frame(11, 0)]),
        Err(PieceError::Overrun(10))
    );
    let empty_frames = Piece {
        index: 0,
        count: 2,
        total: 0,
        last_continues: false,
    };
    assert_eq!(
        assembler.add(&empty_frames, vec![Bytes::new(); MAX_FRAMES + 1]),
        Err(PieceError::TooManyFrames)
    );
    let no_buffer = Piece {
        index: 0,
        count: 1,
        total: 0,
        last_continues: false,
    };
    assert_eq!(assembler.add(&no_buffer, vec![]), Err(PieceError::Empty));
    let no_pieces = Piece {
        count: 0,
        ..no_buffer.clone()
    };
    assert!(matches!(
        assembler.add(&no_pieces, vec![frame(1, 0)]),
        Err(PieceError::OutOfOrder { .. })
    ));
}

#[test]
fn a_message_whose_pieces_end_short_or_mid_frame_is_refused() {
    let short = Piece {
        index: 0,
        count: 1,
        total: 10,
        last_continues: false,
    };
    let mut assembler = Assembler::default();
    assert_eq!(
        assembler.add(&short, vec![frame(4, 0)]),
        Err(PieceError::Short {
            received: 4,
            total: 10
        })
    );
    let dangling = Piece {
        index: 0,
        count: 1,
        total: 4,
        last_continues: true,
    };
    assert!(matches!(
        assembler.add(&dangling, vec![frame(4, 0)]),
        Err(PieceError::Short { .. })
    ));
}

proptest! {
    /// Whatever the frames' sizes (empty ones included), the pieces give them back exactly,
    /// and no piece is over the piece size.
    #[test]
    fn any_frames_come_back_whole(sizes in prop::collection::vec(0usize..(PIECE_BYTES * 2), 0..8)) {
        let frames: Vec<Bytes> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| Bytes::from((0..len).map(|j| (i * 31 + j) as u8).collect::<Vec<_>>()))
            .collect();
        if frames.is_empty() {
            prop_assert!(split(&frames).is_empty());
            return Ok(());
        }
        for (_, buffers) in split(&frames) {
            prop_assert!(buffers.iter().map(Bytes::len).sum::<usize>() <= PIECE_BYTES);
        }
        prop_assert_eq!(round_trip(&frames), Ok(Some(frames.clone())));
    }

    /// Any sequence of pieces a peer may invent gives an error, a wait or a message within
    /// the limits, never a panic.
    #[test]
    fn invented_pieces_never_panic_or_exceed_the_limits(
        pieces in prop::collection::vec(
            (0u32..4, 0u32..4, 0u64..(3 * PIECE_BYTES as u64), any::<bool>(), prop::collection::vec(0usize..1000, 0..4)),
            0..12,
        )
    ) {
        let mut assembler = Assembler::default();
        for (index, count, total, last_continues, sizes) in pieces {
            let piece = Piece { index, count, total, last_continues };
            let buffers = sizes.into_iter().map(|len| frame(len, 7)).collect();
            if let Ok(Some(frames)) = assembler.add(&piece, buffers) {
                let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
                prop_assert_eq!(bytes, total);
                prop_assert!(frames.len() <= MAX_FRAMES);
            }
        }
    }
}
