//! Prints the SMS transport's size figures: bits per character of the text encoding, header
//! bytes, bytes per SMS, SMS per bundle in text and binary mode, and how many SMS a
//! DHIS2-style plain packing of the reference record would take.
//!
//! ```text
//! cargo run -p ferry-transport-sms --example sizes
//! ```
#![allow(clippy::print_stdout)]

use ferry_transport_sms::frame::{self, BINARY_FRAME};
use ferry_transport_sms::text;

/// Bundle sizes from bundles/SPEC.md §11 and the frozen vectors.
const REFERENCE: usize = 237; // one new 12-field record from a known member
const RECEIPT: usize = 114; // a receipt-only bundle, 3 members
const FIXED: usize = 108; // a bundle's fixed overhead
const PER_RECORD: usize = REFERENCE - FIXED; // what one more record adds (upper bound: no zstd)

fn sms(len: usize, frame_bytes: usize) -> usize {
    frame::layout(len, frame_bytes).map_or(usize::MAX, |l| l.count)
}

/// A deterministic pseudo-random message (incompressible, like an encrypted bundle).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Bits a DHIS2-style packer needs for the reference record, following the description
/// in ANCHORS.md (bit-packed header with a 1-byte hash check, type, version and a 32-bit
/// last-sync date; ids hashed to the smallest collision-free width over metadata both sides
/// share; then Base64 into a text SMS). No signature, no encryption, no authentication.
fn dhis2_bits() -> (usize, Vec<(&'static str, usize)>) {
    // Strings as a 6-bit length and 7-bit ASCII characters; integers as a 5-bit bit-length
    // and the bits; decimals as an integer of tenths; dates as 16-bit day numbers.
    let string = |s: &str| 6 + 7 * s.len();
    let int = |v: u64| 5 + (64 - v.leading_zeros() as usize).max(1);
    let field_id = 4; // 12 data elements: 4 bits tell them apart
    let value_type = 3;
    let per_field = field_id + value_type;
    let parts: Vec<(&str, usize)> = vec![
        ("header: hash 8 + type 4 + version 4 + last sync 32", 48),
        (
            "user, org unit, program stage (hashed ids, 8 bits each)",
            24,
        ),
        ("submission id", 8),
        ("record id v-2026-000123", string("v-2026-000123")),
        ("patient_id p-004512", per_field + string("p-004512")),
        ("visit_date 2026-11-03", per_field + 16),
        ("village Kisumu Ndogo", per_field + string("Kisumu Ndogo")),
        ("age_years 34", per_field + int(34)),
        ("sex F", per_field + string("F")),
        ("weight_kg 61.5", per_field + int(615) + 3),
        ("muac_mm 242", per_field + int(242)),
        ("temp_c 37.8", per_field + int(378) + 3),
        ("diagnosis malaria", per_field + string("malaria")),
        ("treatment ACT", per_field + string("ACT")),
        ("followup true", per_field + 1),
    ];
    (parts.iter().map(|p| p.1).sum(), parts)
}

fn main() {
    let text_frame = text::bytes_for(160);
    println!("ferry SMS transport — size figures\n");

    println!("Text encoding");
    println!(
        "  alphabet: {} safe GSM-7 basic characters: {}",
        text::BASE,
        String::from_utf8_lossy(text::ALPHABET)
    );
    println!(
        "  bits per character: {:.3} (log2 {})",
        text::bits_per_char(),
        text::BASE
    );
    let sample = text::encode(&noise(text_frame, 7));
    println!(
        "  one SMS: {} characters carry {} bytes ({:.3} bits per character after rounding)",
        sample.len(),
        text_frame,
        (text_frame * 8) as f64 / sample.len() as f64
    );
    println!("  (plain Base64 carries 120 bytes in 160 characters: 6 bits per character)\n");

    println!("Header and checksum per SMS (tag 14 bits, part index and count, CRC-16)");
    println!("  one-part message:    {} bytes", frame::SINGLE_OVERHEAD);
    println!("  2-16 parts:          {} bytes", frame::SHORT_OVERHEAD);
    println!("  17-256 parts:        {} bytes", frame::LONG_OVERHEAD);
    println!("  repair request for 2 missing parts of a 6-part message: 7 bytes, 10 characters\n");

    println!("Bundle bytes per SMS            text   binary");
    println!("  whole SMS                      {text_frame:>4}   {BINARY_FRAME:>4}");
    for (what, over) in [
        ("one-part message", frame::SINGLE_OVERHEAD),
        ("2-16 parts", frame::SHORT_OVERHEAD),
        ("17-256 parts", frame::LONG_OVERHEAD),
    ] {
        println!(
            "  {what:<30} {:>4}   {:>4}",
            text_frame - over,
            BINARY_FRAME - over
        );
    }
    println!(
        "  largest message (256 SMS)      {:>5}  {:>5}\n",
        frame::max_message(text_frame),
        frame::max_message(BINARY_FRAME)
    );

    println!("SMS per bundle                                       text   binary");
    let rows: Vec<(String, usize, usize)> = vec![
        (
            format!("receipt-only bundle, 3 members ({RECEIPT} B)"),
            RECEIPT,
            1,
        ),
        (
            format!("one new reference record ({REFERENCE} B)"),
            REFERENCE,
            1,
        ),
        (
            "genesis + one visit, vector valid-one-record (375 B)".into(),
            375,
            1,
        ),
        (
            format!("ten records, ten bundles (10 x {REFERENCE} B)"),
            REFERENCE,
            10,
        ),
        (
            format!(
                "ten records, one bundle (<= {} B, no zstd gain)",
                FIXED + 10 * PER_RECORD
            ),
            FIXED + 10 * PER_RECORD,
            1,
        ),
    ];
    for (what, len, n) in rows {
        println!(
            "  {what:<52} {:>4}   {:>4}",
            n * sms(len, text_frame),
            n * sms(len, BINARY_FRAME)
        );
    }
    let ten_text = 10 * (text_frame - frame::SHORT_OVERHEAD);
    let ten_bin = 10 * (BINARY_FRAME - frame::SHORT_OVERHEAD);
    println!(
        "  a bundle fits 10 SMS when it is at most {ten_text} B (text) or {ten_bin} B (binary);"
    );
    println!(
        "  ten records in one bundle must average <= {} B (text) / {} B (binary) each after the {FIXED} B overhead\n",
        (ten_text - FIXED) / 10,
        (ten_bin - FIXED) / 10
    );

    // The real cutting, on a random blob of the reference size.
    let blob = noise(REFERENCE, 42);
    let lay = frame::layout(blob.len(), text_frame).expect("fits");
    let chars: Vec<usize> = (0..lay.count)
        .map(|i| text::encode(&frame::data_frame(1, &blob, lay, i)).len())
        .collect();
    println!(
        "Measured: a {REFERENCE}-byte bundle as text SMS: {} SMS of {chars:?} characters",
        lay.count
    );
    let lay = frame::layout(blob.len(), BINARY_FRAME).expect("fits");
    let bytes: Vec<usize> = (0..lay.count)
        .map(|i| frame::data_frame(1, &blob, lay, i).len())
        .collect();
    println!(
        "Measured: a {REFERENCE}-byte bundle as binary SMS: {} SMS of {bytes:?} bytes\n",
        lay.count
    );

    let (bits, parts) = dhis2_bits();
    let chars = bits.div_ceil(6);
    println!("DHIS2-style plain packing of the reference record (no signature, no encryption)");
    for (what, b) in &parts {
        println!("  {what:<58} {b:>4} bits");
    }
    println!(
        "  total {bits} bits = {} bytes -> Base64 {chars} characters -> {} SMS",
        bits.div_ceil(8),
        chars.div_ceil(160)
    );
    println!(
        "  ferry, signed and encrypted: {} SMS (text), {} SMS (binary)",
        sms(REFERENCE, text_frame),
        sms(REFERENCE, BINARY_FRAME)
    );
}
