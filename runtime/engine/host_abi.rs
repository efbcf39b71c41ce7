//! The optional `atom` import module a guest may use beside WASI:
//!
//! ```wat
//! (import "atom" "set_property" (func (param i32 i32 i32 i32) (result i32)))
//! (import "atom" "emit" (func (param i32 i32) (result i32)))
//! ```
//!
//! - `set_property(name_ptr, name_len, value_ptr, value_len)` sets a
//!   dynamic document property (UTF-8; names `[A-Za-z0-9_.-]`, at most 64
//!   bytes, not one of the tracked or built-in names in [`RESERVED_NAMES`];
//!   values at most 4 KiB) on the documents emitted after it and on the
//!   stdout document.
//! - `emit(ptr, len)` emits one output document with the properties in
//!   force. A guest that emits documents may still write stdout: a
//!   non-empty stdout becomes the last document.
//!
//! Both return 0 on success, or a negative code the guest can act on:
//! [`BAD_POINTER`], [`BAD_NAME`], [`BAD_VALUE`], [`OUTPUT_LIMIT`].

use wasmtime::{Caller, Extern, Linker};

use super::{OutputDocument, Properties};

pub const OK: i32 = 0;
/// The pointer and length do not lie inside the guest's memory.
pub const BAD_POINTER: i32 = -1;
/// The property name is empty, too long, reserved, or has characters outside `[A-Za-z0-9_.-]`.
pub const BAD_NAME: i32 = -2;
/// The property value is not UTF-8 or is longer than 4 KiB.
pub const BAD_VALUE: i32 = -3;
/// Emitting this document would pass the output size limit. The run
/// fails with "output limit exceeded" even if the guest carries on.
pub const OUTPUT_LIMIT: i32 = -4;

const MAX_NAME: usize = 64;
const MAX_VALUE: usize = 4096;

/// What a guest did through the `atom` module during one run.
#[derive(Debug, Default)]
pub struct HostState {
    pub properties: Properties,
    pub documents: Vec<OutputDocument>,
    pub emitted_bytes: usize,
    pub max_output: usize,
    /// Set when the guest hit the output limit through `emit`.
    pub output_limit_hit: bool,
}

/// Names the runtime sets (tracked properties and built-ins); a guest
/// cannot override them, so templates always mean the same thing.
pub const RESERVED_NAMES: [&str; 10] = [
    "as2_from",
    "as2_to",
    "subject",
    "message_id",
    "file_name",
    "mime_type",
    "process",
    "execution_id",
    "date",
    "document_index",
];

/// True for a property name a guest may set.
pub fn valid_property_name(name: &str) -> bool {
    !RESERVED_NAMES.contains(&name)
        && !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Adds the `atom` module to a linker whose store data gives access to a [`HostState`].
pub fn add_to_linker<T: 'static>(
    linker: &mut Linker<T>,
    host: fn(&mut T) -> &mut HostState,
) -> wasmtime::Result<()> {
    linker.func_wrap(
        "atom",
        "set_property",
        move |mut caller: Caller<'_, T>,
              name_ptr: i32,
              name_len: i32,
              value_ptr: i32,
              value_len: i32|
              -> i32 {
            let Some(name) = read_guest(&mut caller, name_ptr, name_len) else {
                return BAD_POINTER;
            };
            let Some(value) = read_guest(&mut caller, value_ptr, value_len) else {
                return BAD_POINTER;
            };
            let Ok(name) = String::from_utf8(name) else {
                return BAD_NAME;
            };
            if !valid_property_name(&name) {
                return BAD_NAME;
            }
            let Ok(value) = String::from_utf8(value) else {
                return BAD_VALUE;
            };
            if value.len() > MAX_VALUE {
                return BAD_VALUE;
            }
            host(caller.data_mut()).properties.insert(name, value);
            OK
        },
    )?;
    linker.func_wrap(
        "atom",
        "emit",
        move |mut caller: Caller<'_, T>, ptr: i32, len: i32| -> i32 {
            let Some(bytes) = read_guest(&mut caller, ptr, len) else {
                return BAD_POINTER;
            };
            let state = host(caller.data_mut());
            if state.emitted_bytes + bytes.len() > state.max_output {
                state.output_limit_hit = true;
                return OUTPUT_LIMIT;
            }
            state.emitted_bytes += bytes.len();
            let properties = state.properties.clone();
            state.documents.push(OutputDocument { bytes, properties });
            OK
        },
    )?;
    Ok(())
}

/// Copies `len` bytes at `ptr` out of the guest's exported memory, if they are inside it.
fn read_guest<T>(caller: &mut Caller<'_, T>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let memory = match caller.get_export("memory") {
        Some(Extern::Memory(m)) => m,
        _ => return None,
    };
    let start = usize::try_from(ptr as u32).ok()?;
    let len = usize::try_from(len as u32).ok()?;
    let end = start.checked_add(len)?;
    memory.data(&caller).get(start..end).map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::valid_property_name;

    #[test]
    fn property_names() {
        assert!(valid_property_name("partner_folder"));
        assert!(valid_property_name("x12.ISA06"));
        assert!(!valid_property_name(""));
        assert!(!valid_property_name("a/b"));
        assert!(!valid_property_name("with space"));
        assert!(!valid_property_name(&"x".repeat(65)));
        assert!(
            !valid_property_name("as2_from"),
            "tracked names are the runtime's"
        );
    }
}
