//! `gatekeeper bundle ...`: pack policy folders into bundles, make signing keys, sign and
//! verify bundles.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use gatekeeper::Clock as _;
use gatekeeper::keys::{SignerKey, VerifierKey};
use gatekeeper::{Bundle, ImageUse, TrustedKeys};

use crate::Policies;

/// The exit codes of every `bundle` command.
pub(crate) const EXIT: &str = "\
Exit status:
  0  done: the bundle or key is written, or the bundle verifies
  1  the policies do not validate (build: no bundle is written), or the bundle does not
     verify (verify)
  2  a usage error, or a file that cannot be read or written";

const BUILD_EXIT: &str = "\
Exit status:
  0  the bundle is written
  1  the policies do not validate (each problem is reported); no bundle is written
  2  a usage error, a key or an output file that cannot be read or written";

const WRITE_EXIT: &str = "\
Exit status:
  0  written
  2  a usage error, or a file that cannot be read or written";

const VERIFY_EXIT: &str = "\
Exit status:
  0  the bundle's signatures and digests verify and its policy loads (with --recompile: and
     its compiled image is the one this build makes from its policy files)
  1  they do not, or it does not
  2  a usage error, or a bundle or key that cannot be read";

#[derive(Subcommand, Debug)]
pub(crate) enum BundleCommand {
    /// Pack policy folders (which must validate) into a bundle file.
    #[command(after_help = BUILD_EXIT)]
    Build(BuildArgs),
    /// Make an Ed25519 signing key: FILE holds the private key (mode 0600), FILE.pub the
    /// public key to trust (--trusted-key, or Builder::trusted_keys in Rust).
    #[command(after_help = WRITE_EXIT)]
    Keygen {
        /// The key's name, named in signatures (no spaces or +), such as policy-team-2026.
        #[arg(long, value_name = "NAME")]
        name: String,
        /// Where to write the private key; the public key goes to FILE.pub.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Add signatures to a bundle file (replacing earlier ones by the same keys).
    #[command(after_help = WRITE_EXIT)]
    Sign {
        /// The bundle file, rewritten in place.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// A private key file (repeat for several signers).
        #[arg(long = "key", value_name = "FILE", required = true)]
        keys: Vec<PathBuf>,
    },
    /// Check a bundle's digests and signatures against public keys and load its policy, as a
    /// gatekeeper would (expiry and rollback aside); says whether the compiled image was used.
    #[command(after_help = VERIFY_EXIT)]
    Verify {
        /// The bundle file.
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// A public key file, or a public key itself (repeat for several).
        #[arg(long = "trusted-key", value_name = "KEY", required = true)]
        trusted_keys: Vec<String>,
        /// How many distinct keys must have signed.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// Also compile the policy files and check that the bundle's compiled image is byte
        /// for byte the one this build makes from them.
        #[arg(long)]
        recompile: bool,
    },
}

// No doc comment: clap would show it in place of the command's.
#[derive(clap::Args, Debug)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    policies: Policies,
    /// Where to write the bundle.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: PathBuf,
    /// The bundle's revision number; bundles lower than the highest accepted are refused.
    /// Defaults to the current Unix time in seconds.
    #[arg(long)]
    revision: Option<u64>,
    /// When the bundle stops being accepted, and an active one is withdrawn (RFC 3339).
    #[arg(long, value_name = "RFC3339")]
    expires: Option<String>,
    /// Sign the bundle with this private key file (repeat for several signers).
    #[arg(long = "sign-with", value_name = "KEY")]
    sign_with: Vec<PathBuf>,
    /// Leave out the compiled image of the policy: a JSON bundle of format 1, which older
    /// gatekeepers read, and which every gatekeeper compiles from its policy files on loading.
    #[arg(long = "no-image")]
    no_image: bool,
}

/// Runs a `bundle` subcommand; the exit code.
pub(crate) fn run(
    command: BundleCommand,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    match command {
        BundleCommand::Build(args) => build(&args, colour, stdout, stderr),
        BundleCommand::Keygen { name, output } => keygen(&name, &output, stdout),
        BundleCommand::Sign { bundle, keys } => sign(&bundle, &keys, stdout),
        BundleCommand::Verify {
            bundle,
            trusted_keys,
            threshold,
            recompile,
        } => verify(
            &bundle,
            &trusted_keys,
            threshold,
            recompile,
            colour,
            stdout,
            stderr,
        ),
    }
}

fn build(
    args: &BuildArgs,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let BuildArgs {
        policies: p,
        output,
        revision,
        expires,
        sign_with,
        no_image,
    } = args;
    let now = gatekeeper::SystemClock.now();
    let expires = expires
        .as_deref()
        .map(|e| {
            policy::Instant::parse_rfc3339(e).map_err(|err| anyhow::anyhow!("`--expires`: {err}"))
        })
        .transpose()?;
    let signers = sign_with
        .iter()
        .map(|k| read_signer(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let revision =
        revision.unwrap_or_else(|| u64::try_from(now.as_nanos() / 1_000_000_000).unwrap_or(0));
    let built = if *no_image {
        Bundle::build(&p.policies, revision, now, expires)
    } else {
        Bundle::build_with_image(&p.policies, revision, now, expires)
    };
    let mut bundle = match built {
        Ok(b) => b,
        Err(gatekeeper::BundleError::Policy(d)) => {
            crate::write_diagnostics(&d, "no bundle was written", colour, stderr)?;
            return Ok(1);
        }
        Err(e) => return Err(e.into()),
    };
    for signer in &signers {
        bundle
            .sign(signer)
            .with_context(|| format!("signing with `{}`", signer.name()))?;
    }
    let bytes = write_bundle(&bundle, output)?;
    let signed = if signers.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = signers.iter().map(SignerKey::name).collect();
        format!(", signed by {}", names.join(", "))
    };
    let image = match &bundle.manifest.image {
        Some(image) => format!(
            ", compiled image of {} bytes (engine build {})",
            image.size, image.build
        ),
        None => ", no compiled image".to_owned(),
    };
    writeln!(
        stdout,
        "wrote {}: format {}, revision {}, {} files{image}{signed}, {} bytes, sha256 {}",
        output.display(),
        bundle.manifest.format,
        bundle.manifest.revision,
        bundle.manifest.files.len(),
        bytes.len(),
        gatekeeper::sha256_hex(&bytes)
    )?;
    Ok(0)
}

fn keygen(name: &str, output: &Path, stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let key = SignerKey::generate(name)?;
    let public = public_path(output);
    if public.exists() {
        anyhow::bail!(
            "`{}` exists; an existing key is never overwritten",
            public.display()
        );
    }
    write_new(
        output,
        format!("{}\n", key.to_private_text()).as_bytes(),
        true,
    )?;
    write_new(&public, format!("{}\n", key.verifier()).as_bytes(), false)?;
    writeln!(
        stdout,
        "wrote {} (private: keep it secret) and {}: {}",
        output.display(),
        public.display(),
        key.verifier()
    )?;
    Ok(0)
}

fn sign(path: &Path, keys: &[PathBuf], stdout: &mut dyn Write) -> anyhow::Result<u8> {
    let signers = keys
        .iter()
        .map(|k| read_signer(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut bundle = read_bundle(path)?;
    // A signature vouches for the files through their digests: never sign a bundle whose
    // files do not match them.
    bundle
        .verify_digests()
        .with_context(|| format!("`{}` is not signed", path.display()))?;
    for signer in &signers {
        bundle
            .sign(signer)
            .with_context(|| format!("signing with `{}`", signer.name()))?;
    }
    let bytes = write_bundle(&bundle, path)?;
    let names: Vec<&str> = signers.iter().map(SignerKey::name).collect();
    writeln!(
        stdout,
        "signed {} (revision {}) with {}; {} signature(s), sha256 {}",
        path.display(),
        bundle.manifest.revision,
        names.join(", "),
        bundle.signatures.len(),
        gatekeeper::sha256_hex(&bytes)
    )?;
    Ok(0)
}

fn verify(
    path: &Path,
    trusted: &[String],
    threshold: usize,
    recompile: bool,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let keys = trusted
        .iter()
        .map(|k| read_verifier(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let trusted = TrustedKeys::new(keys, threshold)?;
    let bundle = read_bundle(path)?;
    let checked = bundle
        .verify_signatures(&trusted)
        .and_then(|by| bundle.verify_digests().map(|()| by));
    let by = match checked {
        Ok(by) => by,
        Err(e) => return refuse(path, &e, stderr),
    };
    let label = path.display().to_string();
    let loaded = match bundle.load(&label) {
        Ok(loaded) => loaded,
        Err(gatekeeper::BundleError::Policy(d)) => {
            crate::write_diagnostics(&d, "the bundle's policy does not load", colour, stderr)?;
            return Ok(1);
        }
        Err(e) => return refuse(path, &e, stderr),
    };
    let used = match (&loaded.image, &bundle.manifest.image) {
        (ImageUse::Loaded, Some(image)) => format!(
            "policy loaded from the compiled image (engine build {})",
            image.build
        ),
        (ImageUse::Skipped(_), _) => "policy compiled from the policy files".to_owned(),
        _ => "no compiled image: policy compiled from the policy files".to_owned(),
    };
    if let Some(warning) = loaded.image.warning() {
        writeln!(stderr, "warning: {warning}")?;
    }
    drop(loaded);
    writeln!(
        stdout,
        "ok: revision {}, {} files, signed by {}; {used}",
        bundle.manifest.revision,
        bundle.manifest.files.len(),
        by.join(", ")
    )?;
    if recompile {
        return self::recompile(path, &bundle, colour, stdout, stderr);
    }
    Ok(0)
}

/// `verify --recompile`: compiles the bundle's policy files and compares the image this build
/// makes from them with the bundle's, byte for byte.
fn recompile(
    path: &Path,
    bundle: &Bundle,
    colour: bool,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> anyhow::Result<u8> {
    let (Some(entry), Some(image)) = (&bundle.manifest.image, &bundle.image) else {
        writeln!(
            stderr,
            "error: `{}` has no compiled image to compare (format {}); build it without --no-image",
            path.display(),
            bundle.manifest.format
        )?;
        return Ok(1);
    };
    let compiled = match bundle.load_files(&path.display().to_string()) {
        Ok(loaded) => loaded,
        Err(gatekeeper::BundleError::Policy(d)) => {
            crate::write_diagnostics(
                &d,
                "the bundle's policy files do not compile",
                colour,
                stderr,
            )?;
            return Ok(1);
        }
        Err(e) => return refuse(path, &e, stderr),
    };
    let ours = compiled.policy.to_image();
    let this_build = policy::image_build();
    if entry.build != this_build {
        // This build does not use the image, whatever its bytes.
        let bytes = if ours == *image {
            "its bytes are nonetheless the ones this build makes from the policy files"
        } else {
            "this build's image of the same policy files differs"
        };
        writeln!(
            stderr,
            "error: `{}`: the compiled image was made by engine build {}, and this is build {this_build}, which compiles the policy files instead ({bytes}); rebuild the bundle with this build",
            path.display(),
            entry.build
        )?;
        return Ok(1);
    }
    if ours == *image {
        writeln!(
            stdout,
            "ok: the compiled image ({} bytes) is byte for byte the one this build ({this_build}) makes from the policy files",
            image.len()
        )?;
        return Ok(0);
    }
    // Same build, different bytes: either compiling is not deterministic, or the image is
    // not the one these files make.
    let again = compiled.policy.to_image();
    let recompiled = match bundle.load_files(&path.display().to_string()) {
        Ok(loaded) => loaded.policy.to_image(),
        Err(e) => return refuse(path, &e, stderr),
    };
    if again != ours || recompiled != ours {
        let (a, b) = if again != ours {
            (&ours, &again)
        } else {
            (&ours, &recompiled)
        };
        writeln!(
            stderr,
            "error: compiling is not deterministic in this build ({this_build}): two images of the same policy files differ, {}",
            difference(a, b)
        )?;
        return Ok(1);
    }
    writeln!(
        stderr,
        "error: `{}`: the compiled image is not the one this build ({this_build}) makes from the bundle's policy files (compiling them again gives the same bytes each time): the bundle's image and this build's {}",
        path.display(),
        difference(image, &ours)
    )?;
    Ok(1)
}

/// Where two byte strings first differ, and their lengths, in words.
fn difference(a: &[u8], b: &[u8]) -> String {
    let at = a.iter().zip(b).position(|(x, y)| x != y);
    match at {
        Some(at) => format!(
            "first differ at byte {at} (0x{:02x} and 0x{:02x}); {} and {} bytes long",
            a.get(at).copied().unwrap_or_default(),
            b.get(at).copied().unwrap_or_default(),
            a.len(),
            b.len()
        ),
        None => format!(
            "agree over the shorter's length, and are {} and {} bytes long",
            a.len(),
            b.len()
        ),
    }
}

/// Says why a bundle does not verify; exit code 1.
fn refuse(path: &Path, e: &gatekeeper::BundleError, stderr: &mut dyn Write) -> anyhow::Result<u8> {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    writeln!(
        stderr,
        "error: `{}` does not verify: {text}",
        path.display()
    )?;
    Ok(1)
}

/// `FILE.pub` beside `FILE`.
fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn read_signer(path: &Path) -> anyhow::Result<SignerKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the private key `{}`", path.display()))?;
    SignerKey::parse(&text).with_context(|| format!("in `{}`", path.display()))
}

/// A public key given as a file or as the key's text.
fn read_verifier(given: &str) -> anyhow::Result<VerifierKey> {
    if let Ok(key) = VerifierKey::parse(given) {
        return Ok(key);
    }
    let text = std::fs::read_to_string(given)
        .with_context(|| format!("`{given}` is neither a public key nor a readable file"))?;
    VerifierKey::parse(&text).with_context(|| format!("in `{given}`"))
}

fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading the bundle `{}`", path.display()))?;
    Bundle::parse(&bytes).with_context(|| format!("in `{}`", path.display()))
}

/// Writes the bundle through a temporary file and a rename; its bytes.
fn write_bundle(bundle: &Bundle, output: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = bundle.to_bytes();
    let tmp = output.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing `{}`", tmp.display()))?;
    std::fs::rename(&tmp, output).with_context(|| format!("writing `{}`", output.display()))?;
    Ok(bytes)
}

/// Writes a file that must not exist yet; a private one is readable by its owner only.
fn write_new(path: &Path, data: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(path).with_context(|| {
        format!(
            "creating `{}` (an existing key is never overwritten)",
            path.display()
        )
    })?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing `{}`", path.display()))
}
