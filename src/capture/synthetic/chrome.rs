//! The phantom's screen chrome: burned-in text, depth ruler, colour bar, the no-signal screen.

use super::*;

pub(super) fn put(out: &mut [u8], width: usize, x: usize, y: usize, rgb: [u8; 3]) {
    let i = (y * width + x) * 3;
    if x < width && i + 3 <= out.len() {
        out[i..i + 3].copy_from_slice(&rgb);
    }
}

pub(super) fn fill_rect(out: &mut [u8], width: usize, r: Rect, rgb: [u8; 3]) {
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            put(out, width, x, y, rgb);
        }
    }
}

pub(super) fn outline(out: &mut [u8], fan: &Fan, r: Rect, rgb: [u8; 3]) {
    let t = (fan.scale.round() as usize).max(1);
    for edge in [Rect { h: t, ..r }, Rect { y: r.y + r.h - t, h: t, ..r }, Rect { w: t, ..r }, Rect { x: r.x + r.w - t, w: t, ..r }] {
        fill_rect(out, fan.width, edge, rgb);
    }
}

pub(super) fn draw_chrome(fan: &Fan, seed: u64, out: &mut [u8]) {
    for px in out.chunks_exact_mut(3) {
        px.copy_from_slice(&BACKGROUND);
    }
    let (s, ts) = (fan.scale, text_scale(fan.scale));
    let id = format!("ID {:08}", seed % 100_000_000);
    let left = (16.0 * s) as usize;
    draw_lines(out, fan.width, (left, (12.0 * s) as usize), ts, &["SONOEDGE PHANTOM", "DOE JANE", &id, "2024-03-14 10:22:05"]);
    let bottom = fan.height.saturating_sub((16.0 * s) as usize + 30 * ts);
    draw_lines(out, fan.width, (left, bottom), ts, &["L12-5 BREAST LT", "GN 52 DR 60", "FR 15HZ D 10CM"]);
    let right = fan.width.saturating_sub((16.0 * s) as usize + 14 * 6 * ts);
    draw_lines(out, fan.width, (right, (12.0 * s) as usize), ts, &["MI 0.9 TIS 0.3", "B 12MHZ"]);
    draw_ruler(fan, out);
}

pub(super) fn text_scale(scale: f32) -> usize {
    ((2.0 * scale).round() as usize).max(1)
}

pub(super) fn draw_lines(out: &mut [u8], width: usize, at: (usize, usize), ts: usize, lines: &[&str]) {
    for (i, line) in lines.iter().enumerate() {
        draw_text(out, width, (at.0, at.1 + i * 10 * ts), ts, TEXT, line);
    }
}

/// Depth scale right of the fan: a tick every 0.5 cm (32 reference px), numbers every 2 cm.
pub(super) fn draw_ruler(fan: &Fan, out: &mut [u8]) {
    let s = fan.scale;
    let t = (s.round() as usize).max(1);
    let bounds = fan.bounds();
    let x = bounds.x + bounds.w + (24.0 * s) as usize;
    let (top, bottom) = (fan.apex.1 as usize, ((fan.apex.1 + fan.r_max) as usize).min(fan.height - 1));
    fill_rect(out, fan.width, Rect { x, y: top, w: t, h: bottom - top }, RULER);
    for tick in 0..=20usize {
        let y = top + (tick as f32 * 32.0 * s) as usize;
        if y > bottom {
            break;
        }
        let length = (if tick % 2 == 0 { 10.0 * s } else { 5.0 * s }) as usize;
        fill_rect(out, fan.width, Rect { x, y, w: length.max(1), h: t }, RULER);
        if tick % 4 == 0 {
            let ts = text_scale(s);
            draw_text(out, fan.width, (x + (14.0 * s) as usize, y.saturating_sub(3 * ts)), ts, RULER, &(tick / 2).to_string());
        }
    }
}

/// The legend a machine shows beside a Doppler image: red (towards) above blue (away).
pub(super) fn draw_colour_bar(out: &mut [u8], fan: &Fan, area: Rect) {
    let s = fan.scale;
    let (x, w) = (area.x.saturating_sub((24.0 * s) as usize), ((10.0 * s) as usize).max(1));
    let (top, h) = ((120.0 * s) as usize, ((160.0 * s) as usize).max(2));
    for row in 0..h {
        let v = 1.0 - 2.0 * (row as f32 + 0.5) / h as f32;
        fill_rect(out, fan.width, Rect { x, y: top + row, w, h: 1 }, flow_colour(v, 1.0));
    }
}

pub(super) fn draw_no_signal(fan: &Fan, out: &mut [u8]) {
    out.fill(0);
    let ts = text_scale(fan.scale);
    let at = ((fan.width / 2).saturating_sub(27 * ts), fan.height / 2);
    draw_text(out, fan.width, at, ts, [90, 90, 90], "NO SIGNAL");
}

/// Blocky 5x7 glyphs, `ts` screen pixels per font pixel, 6 font pixels per character.
pub(super) fn draw_text(out: &mut [u8], width: usize, at: (usize, usize), ts: usize, rgb: [u8; 3], text: &str) {
    for (i, c) in text.chars().enumerate() {
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in (0..5).filter(|col| bits & (0x10 >> col) != 0) {
                let (x, y) = (at.0 + (i * 6 + col) * ts, at.1 + row * ts);
                fill_rect(out, width, Rect { x, y, w: ts, h: ts }, rgb);
            }
        }
    }
}

/// Rows top to bottom, bit 4 = leftmost column (the HD44780 character ROM's shapes).
pub(super) fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        _ => [0; 7],
    }
}
