//! `wasmjobs-componentize`: the two steps a plugin in C or hand-written WAT needs
//! that its own toolchain does not do, done with the Bytecode Alliance's crates
//! rather than CLIs built from source:
//!
//! - `c-bindings`: generate the C bindings of the plugin world (`wit-bindgen-c`):
//!   `plugin.h`, `plugin.c` and `plugin_component_type.o`, which carries the world's
//!   type into the linked module.
//! - `component`: turn a core module (a `.wasm` from clang, or a `.wat` written by
//!   hand) into a component (`wit-component`), adapting WASI preview 1 imports with
//!   the reactor adapter of the wasmtime release the host uses. `--wit` embeds the
//!   world's type first, for modules that do not carry it (WAT).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use wasi_preview1_component_adapter_provider::{
    WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
};
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{Resolve, WorldId};

#[derive(Debug, Parser)]
#[command(about = "Generate C bindings and build components for wasmjobs plugins")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write the C bindings of a world (`<world>.h`, `<world>.c`,
    /// `<world>_component_type.o`) into a directory.
    CBindings {
        /// The WIT directory (the project's `wit/`).
        #[arg(long)]
        wit: PathBuf,
        /// The world to generate.
        #[arg(long, default_value = "plugin")]
        world: String,
        /// Where to write the files.
        #[arg(long)]
        out: PathBuf,
    },
    /// Turn a core module into a component.
    Component {
        /// The core module: binary `.wasm` or text `.wat`.
        core: PathBuf,
        /// Embed this WIT directory's world into the module first (for modules that
        /// do not carry a `component-type` section, such as hand-written WAT).
        #[arg(long)]
        wit: Option<PathBuf>,
        /// The world to embed with `--wit`.
        #[arg(long, default_value = "plugin")]
        world: String,
        /// The component to write.
        #[arg(short, long)]
        output: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::CBindings { wit, world, out } => c_bindings(&wit, &world, &out),
        Command::Component {
            core,
            wit,
            world,
            output,
        } => {
            let mut module = read_core(&core)?;
            if let Some(wit) = wit {
                let (resolve, world) = load_world(&wit, &world)?;
                wit_component::embed_component_metadata(
                    &mut module,
                    &resolve,
                    world,
                    StringEncoding::UTF8,
                    false,
                )
                .context("embedding the world's type")?;
            }
            let component = componentize(&module)
                .with_context(|| format!("making a component of {}", core.display()))?;
            write_atomic(&output, &component)
        }
    }
}

fn load_world(wit: &Path, world: &str) -> Result<(Resolve, WorldId)> {
    let mut resolve = Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("reading WIT from {}", wit.display()))?;
    let id = resolve.select_world(&[package], Some(world))?;
    Ok((resolve, id))
}

fn c_bindings(wit: &Path, world: &str, out: &Path) -> Result<()> {
    let (mut resolve, id) = load_world(wit, world)?;
    let mut files = wit_bindgen_core::Files::default();
    wit_bindgen_c::Opts::default()
        .build()
        .generate(&mut resolve, id, &mut files)
        .context("generating C bindings")?;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, bytes) in files.iter() {
        write_atomic(&out.join(name), bytes)?;
    }
    Ok(())
}

fn read_core(path: &Path) -> Result<Vec<u8>> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"\0asm") {
        return Ok(bytes);
    }
    wat::parse_bytes(&bytes)
        .map(|b| b.into_owned())
        .with_context(|| format!("parsing {} as WAT", path.display()))
}

fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = ComponentEncoder::default();
    encoder.validate(true).module(module)?;
    if imports_preview1(module)? {
        encoder.adapter(
            WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?;
    }
    encoder.encode()
}

/// Whether the module imports WASI preview 1 (C through wasi-libc does; WAT
/// written against the plugin world alone does not).
fn imports_preview1(module: &[u8]) -> Result<bool> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(reader) = payload? {
            for import in reader.into_imports() {
                if import?.module == WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let Some(name) = path.file_name() else {
        bail!("{} is not a file path", path.display());
    };
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}
