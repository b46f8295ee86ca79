//! Compiled images (`Policy::to_image` / `from_image`): a policy read back from its image
//! answers every request as the policy compiled from TOML, the same policy always gives
//! the same bytes, and a damaged image is refused with the reason, never a panic.

use policy::{ImageError, Policy, Posture, image_build};
use reference::generate;

use crate::support::root;

fn records(policy: &Policy, requests: &[policy::Request]) -> Vec<String> {
    requests
        .iter()
        .flat_map(|r| {
            Posture::ALL
                .iter()
                .map(move |p| serde_json::to_string(&policy.decide(r, *p).to_record()).unwrap())
        })
        .collect()
}

/// Generated policies (those of the differential test) and requests at their edges: the
/// image's answers, in full, are the compiled policy's, and its bytes are stable.
#[test]
fn images_of_generated_policies_answer_as_the_policies() {
    let mut rng = fastrand::Rng::with_seed(20_260_119);
    let mut compared = 0;
    for _ in 0..60 {
        let g = generate::policy(&mut rng);
        let Ok(policy) = g.load() else { continue };
        let image = policy.to_image();
        let read = Policy::from_image(&image).unwrap();
        assert_eq!(
            read.to_image(),
            image,
            "an image read back writes the same bytes"
        );
        assert_eq!(
            g.load().unwrap().to_image(),
            image,
            "compiling is deterministic"
        );
        let edges = generate::boundaries(&policy);
        let requests: Vec<policy::Request> = (0..40)
            .filter_map(|_| {
                generate::request(&mut rng, &g, &edges)
                    .record()
                    .into_request()
                    .ok()
            })
            .collect();
        assert_eq!(records(&read, &requests), records(&policy, &requests));
        compared += requests.len();
    }
    assert!(compared > 1_000, "only {compared} requests compared");
}

/// The shipped sets together: same answers on the corpus's requests, same bytes when
/// compiled twice.
#[test]
fn the_shipped_policy_reads_back_from_its_image() {
    let dirs: Vec<_> = ["us-2020", "us-2020-courts", "us-2024-pafaca"]
        .iter()
        .map(|d| root().join("policies").join(d))
        .collect();
    let loaded = gatekeeper::load_dirs(&dirs).unwrap();
    let image = loaded.policy.to_image();
    assert_eq!(
        gatekeeper::load_dirs(&dirs).unwrap().policy.to_image(),
        image
    );
    let read = Policy::from_image(&image).unwrap();
    let mut requests = Vec::new();
    for dir in &dirs {
        for file in std::fs::read_dir(dir.join("tests")).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let case: serde_json::Value = serde_json::from_str(line).unwrap();
                let record: policy::RequestRecord =
                    serde_json::from_value(case["request"].clone()).unwrap();
                requests.push(record.into_request().unwrap());
            }
        }
    }
    assert!(requests.len() > 50, "{} corpus requests", requests.len());
    assert_eq!(
        records(&read, &requests),
        records(&loaded.policy, &requests)
    );
    assert_eq!(read.apps().len(), loaded.policy.apps().len());
    assert_eq!(
        read.prohibitions()
            .iter()
            .map(|p| (&p.id, &p.text))
            .collect::<Vec<_>>(),
        loaded
            .policy
            .prohibitions()
            .iter()
            .map(|p| (&p.id, &p.text))
            .collect::<Vec<_>>()
    );
}

fn shipped_image() -> (Policy, Vec<u8>) {
    let loaded = gatekeeper::load_dirs(&[root().join("policies/us-2024-pafaca")]).unwrap();
    let image = loaded.policy.to_image();
    (loaded.policy, image)
}

#[test]
fn an_image_of_another_build_or_none_is_refused_by_name() {
    let (_, image) = shipped_image();
    assert_eq!(
        Policy::from_image(b"{\"not\": \"an image\"}").unwrap_err(),
        ImageError::NotAnImage
    );
    // The build string follows the magic and its one-byte length.
    let mut other = image.clone();
    let at = 9 + image_build().find('+').unwrap() + 1;
    other[at] = if other[at] == b'0' { b'1' } else { b'0' };
    match Policy::from_image(&other).unwrap_err() {
        ImageError::Build { found, expected } => {
            assert_eq!(expected, image_build());
            assert_ne!(found, expected);
            assert_eq!(found.len(), expected.len());
        }
        e => panic!("{e}"),
    }
    let message = Policy::from_image(&other).unwrap_err().to_string();
    assert!(
        message.contains("compile the policy files instead"),
        "{message}"
    );
}

/// Every truncation, and single-byte changes across the whole image: each is refused or
/// reads back as a policy that still decides (a change within a text or an instant is
/// well formed); none panics.
#[test]
fn damaged_images_are_refused_without_panicking() {
    let (policy, image) = shipped_image();
    let requests: Vec<policy::Request> =
        std::fs::read_to_string(root().join("policies/us-2024-pafaca/tests/cases.jsonl"))
            .unwrap()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(30)
            .map(|line| {
                let case: serde_json::Value = serde_json::from_str(line).unwrap();
                serde_json::from_value::<policy::RequestRecord>(case["request"].clone())
                    .unwrap()
                    .into_request()
                    .unwrap()
            })
            .collect();
    for len in 0..image.len() {
        assert!(
            Policy::from_image(&image[..len]).is_err(),
            "the first {len} bytes of {} read as an image",
            image.len()
        );
    }
    let mut longer = image.clone();
    longer.push(0);
    assert!(matches!(
        Policy::from_image(&longer),
        Err(ImageError::Malformed(m)) if m.contains("after the index")
    ));
    let (mut refused, mut read) = (0, 0);
    let step = (image.len() / 1_000).max(1);
    for at in (8..image.len()).step_by(step) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = image.clone();
            damaged[at] ^= flip;
            match Policy::from_image(&damaged) {
                Err(_) => refused += 1,
                Ok(p) => {
                    read += 1;
                    for r in &requests {
                        for posture in Posture::ALL {
                            let _ = p.decide(r, posture).to_record();
                            let _ = p.decide(r, posture).explain(r);
                        }
                    }
                }
            }
        }
    }
    assert!(refused > 0 && read > 0, "refused {refused}, read {read}");
    // The intact image still answers as the policy.
    assert_eq!(
        records(&Policy::from_image(&image).unwrap(), &requests),
        records(&policy, &requests)
    );
}
