//! `DoGet` answers as gRPC messages built from the batches' own memory.
//!
//! arrow-flight encodes a record batch by copying its buffers into one IPC body, and tonic's codec
//! copies that body again into its send buffer: two copies of every byte a client downloads. Here
//! a batch of plain columns (fixed-width primitives, booleans, strings and binaries, views
//! included, and lists and structs of these) becomes one gRPC message in pieces: a small prefix
//! (gRPC length, protobuf tags and the IPC flatbuffer header, written here) followed by the column
//! buffers themselves, shared rather than copied, each padded to 64 bytes as arrow's own IPC
//! writer does (buffers of up to 1 KiB, as in a lookup's answer, are copied: cheaper than a piece
//! each). The only copy left is the kernel's. Batches above [`MAX_MESSAGE_BYTES`] are sent
//! as several row ranges, cut at multiples of 8 rows so that validity bitmaps can be shared too.
//! Dictionary columns are decoded first ([`hydrate`]). Other schemas (maps, unions) go through
//! arrow-flight's encoder, whose message bodies are still sent without tonic's copy
//! ([`flight_data_message`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arrow::array::{
    Array, ArrayRef, AsArray, GenericByteArray, GenericByteViewArray, GenericListArray,
    OffsetSizeTrait, RecordBatch, downcast_primitive_array,
};
use arrow::buffer::Buffer;
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    BinaryType, BinaryViewType, ByteArrayType, ByteViewType, DataType, Field, LargeBinaryType,
    LargeUtf8Type, Schema, SchemaRef, StringViewType, Utf8Type,
};
use arrow::ipc;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::{FlightData, SchemaAsIpc};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tonic::Status;

/// One gRPC message (the 5-byte gRPC prefix and a protobuf `FlightData`), in the pieces it is
/// sent as.
pub(super) type Message = Vec<Bytes>;

/// Largest IPC body per message, as arrow-flight's encoder: gRPC clients refuse messages above a
/// limit (4 MiB by default in gRPC C++ and Java).
pub(super) const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

/// Body buffers start at multiples of this (arrow's IPC writer default).
const ALIGNMENT: usize = 64;

/// `FlightData.data_body`'s protobuf field number.
const DATA_BODY_FIELD: u32 = 1000;

static PADDING: [u8; ALIGNMENT] = [0; ALIGNMENT];

/// Column buffers up to this size are copied into the message rather than shared.
const COPIED_UP_TO: usize = 1024;

/// The room first made for a message's copied bytes (a one-row answer of a few dozen columns).
const INITIAL_COPIED: usize = 1024;

/// Whether batches of `schema` are sent from their own memory (otherwise arrow-flight encodes
/// them).
pub(super) fn shares_buffers(schema: &Schema) -> bool {
    schema.fields().iter().all(|f| shareable(f.data_type()))
}

/// The schema a `DoGet` stream of `schema`'s batches announces: dictionary columns (top-level or
/// nested in lists and structs) as their value types, since every answer is sent with
/// dictionaries decoded ([`hydrated`] here, arrow-flight's encoder otherwise). `FlightInfo` and
/// prepared statements must report this schema: clients such as ADBC refuse a stream whose schema
/// differs from the one announced (a partitioned Delta table's partition columns are dictionaries).
pub(super) fn wire_schema(schema: &Schema) -> Schema {
    rewrite_schema(schema, false)
}

/// The schema a Flight SQL answer (a statement's or prepared statement's result, a table's schema
/// in `GetTables`) announces and is sent in: [`wire_schema`], with string and binary views as plain
/// strings and binaries. Delta tables' strings come back from DataFusion as views, and the Flight
/// SQL JDBC driver (18.x, what BI tools ship) refuses every result holding one ("Unsupported
/// ArrowType Utf8View", apache/arrow-java#807), as ADBC reports them with no XDBC type. Bulk reads
/// (path descriptors, for training code) keep the views. Each column also carries its SQL type
/// name ([`super::column_metadata`]).
pub(super) fn sql_wire_schema(schema: &Schema) -> Schema {
    super::column_metadata::described(rewrite_schema(schema, true))
}

fn rewrite_schema(schema: &Schema, plain_views: bool) -> Schema {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| wire_field(f, plain_views))
        .collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn wire_field(field: &Field, plain_views: bool) -> Field {
    let data_type = match field.data_type() {
        DataType::Dictionary(_, value) => {
            let value = Field::new(field.name(), value.as_ref().clone(), field.is_nullable());
            return wire_field(&value, plain_views).with_metadata(field.metadata().clone());
        }
        DataType::Utf8View if plain_views => DataType::Utf8,
        DataType::BinaryView if plain_views => DataType::Binary,
        DataType::List(inner) => DataType::List(Arc::new(wire_field(inner, plain_views))),
        DataType::LargeList(inner) => DataType::LargeList(Arc::new(wire_field(inner, plain_views))),
        DataType::FixedSizeList(inner, n) => {
            DataType::FixedSizeList(Arc::new(wire_field(inner, plain_views)), *n)
        }
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| wire_field(f, plain_views)).collect())
        }
        other => other.clone(),
    };
    field.clone().with_data_type(data_type)
}

/// `schema` with its dictionary columns as their value types ([`wire_schema`], what arrow-flight's
/// encoder also sends), when that makes every column shareable; `None` otherwise.
pub(super) fn hydrated(schema: &Schema) -> Option<SchemaRef> {
    let hydrated = wire_schema(schema);
    shares_buffers(&hydrated).then(|| Arc::new(hydrated))
}

/// `batch` with each column of the type `schema` gives it (dictionaries decoded).
pub(super) fn hydrate(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, Status> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(Arc::clone(c))
            } else {
                arrow::compute::cast(c, f.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|columns| RecordBatch::try_new(Arc::clone(schema), columns))
        .map_err(|e| {
            Status::internal(format!(
                "internal error: cannot send a column as its announced type: {e}"
            ))
        })?;
    Ok(columns)
}

/// Plain types, and lists and structs of them.
fn shareable(data_type: &DataType) -> bool {
    match data_type {
        DataType::Boolean
        | DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::Utf8View
        | DataType::BinaryView => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            shareable(f.data_type())
        }
        DataType::Struct(fields) => fields.iter().all(|f| shareable(f.data_type())),
        other => other.primitive_width().is_some(),
    }
}

/// The schema message that opens a stream.
pub(super) fn schema_message(schema: &Schema) -> Result<Message, Status> {
    flight_data_message(SchemaAsIpc::new(schema, &IpcWriteOptions::default()).into())
}

/// Schema messages of schemas answered again and again, by identity: an online lookup answers with
/// its plan's schema, the same `Arc` for every call asking the same features, and encoding it
/// (a flatbuffer of every field) cost as much as the rest of the answer.
#[derive(Debug, Default)]
pub(super) struct SchemaMessages {
    /// Most recently encoded last; the schema is held, so its address is not reused meanwhile.
    recent: Mutex<VecDeque<(SchemaRef, Message)>>,
}

/// Schemas kept.
const KEPT_SCHEMAS: usize = 64;

impl SchemaMessages {
    /// The schema message of `schema`, encoded once while it stays among the recent ones.
    pub(super) fn get(&self, schema: &SchemaRef) -> Result<Message, Status> {
        let same = |(kept, _): &(SchemaRef, Message)| Arc::ptr_eq(kept, schema);
        if let Ok(recent) = self.recent.lock()
            && let Some((_, message)) = recent.iter().find(|e| same(e))
        {
            return Ok(message.clone());
        }
        let message = schema_message(schema)?;
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() >= KEPT_SCHEMAS {
                recent.pop_front();
            }
            recent.push_back((Arc::clone(schema), message.clone()));
        }
        Ok(message)
    }
}

/// Frames a `FlightData`; its body is sent as it is, not copied.
pub(super) fn flight_data_message(mut data: FlightData) -> Result<Message, Status> {
    let body = std::mem::take(&mut data.data_body);
    let len = body.len();
    frame(&data, if len == 0 { vec![] } else { vec![body] }, len)
}

/// The messages of one batch: one, or several row ranges when its body is too large for one.
/// The batch's schema must pass [`shares_buffers`].
pub(super) fn batch_messages(batch: &RecordBatch) -> Result<Vec<Message>, Status> {
    let body = Body::of(batch)?;
    let rows = batch.num_rows();
    if body.len <= MAX_MESSAGE_BYTES || rows < 2 {
        return Ok(vec![body.into_message(rows)?]);
    }
    let parts = body.len.div_ceil(MAX_MESSAGE_BYTES);
    // Cuts at multiples of 8 rows keep bitmaps byte-aligned, hence shared; a batch of a few huge
    // rows is cut anywhere (its bitmaps are a few bytes).
    let step = match rows.div_ceil(parts) {
        step if step >= 8 => step.next_multiple_of(8).min(rows - 1),
        step => step,
    };
    let mut messages = Vec::with_capacity(parts);
    let mut start = 0;
    while start < rows {
        let len = step.min(rows - start);
        messages.extend(batch_messages(&batch.slice(start, len))?);
        start += len;
    }
    Ok(messages)
}

/// A batch's IPC body as shared buffers, and the header entries that describe it.
#[derive(Default)]
struct Body {
    pieces: Vec<Bytes>,
    /// Small buffers and padding since the last shared piece, copied.
    copied: BytesMut,
    len: usize,
    nodes: Vec<ipc::FieldNode>,
    buffers: Vec<ipc::Buffer>,
    /// Data buffers of each view column, in column order.
    variadic_counts: Vec<i64>,
}

impl Body {
    fn of(batch: &RecordBatch) -> Result<Self, Status> {
        // Sized up front: a lookup's answer is a few bytes per column, and growing these vectors
        // and the copied bytes step by step showed in its profile.
        let columns = batch.num_columns();
        let mut body = Body {
            copied: BytesMut::with_capacity(INITIAL_COPIED),
            nodes: Vec::with_capacity(columns),
            buffers: Vec::with_capacity(2 * columns),
            ..Body::default()
        };
        for column in batch.columns() {
            body.push_array(column)?;
        }
        Ok(body)
    }

    fn push_array(&mut self, array: &ArrayRef) -> Result<(), Status> {
        let (len, nulls) = (array.len(), array.null_count());
        self.nodes
            .push(ipc::FieldNode::new(len as i64, nulls as i64));
        // Readers ignore the validity buffer of a column without nulls: send none.
        match array.nulls().filter(|_| nulls > 0) {
            Some(validity) => self.push(validity.inner().sliced()),
            None => self.push(Buffer::default()),
        }
        match array.data_type() {
            DataType::Boolean => self.push(array.as_boolean().values().sliced()),
            DataType::Utf8 => self.push_bytes(array.as_bytes::<Utf8Type>())?,
            DataType::LargeUtf8 => self.push_bytes(array.as_bytes::<LargeUtf8Type>())?,
            DataType::Binary => self.push_bytes(array.as_bytes::<BinaryType>())?,
            DataType::LargeBinary => self.push_bytes(array.as_bytes::<LargeBinaryType>())?,
            DataType::Utf8View => self.push_views(array.as_byte_view::<StringViewType>()),
            DataType::BinaryView => self.push_views(array.as_byte_view::<BinaryViewType>()),
            DataType::List(_) => self.push_list(array.as_list::<i32>())?,
            DataType::LargeList(_) => self.push_list(array.as_list::<i64>())?,
            DataType::FixedSizeList(_, _) => {
                let list = array.as_fixed_size_list();
                let values = list.values();
                if values.len() != len * list.value_length().max(0) as usize {
                    return Err(Status::internal(
                        "internal error: a fixed-size list's values do not match its length",
                    ));
                }
                self.push_array(values)?;
            }
            DataType::Struct(_) => {
                for child in array.as_struct().columns() {
                    if child.len() != len {
                        return Err(Status::internal(
                            "internal error: a struct's field is not as long as the struct",
                        ));
                    }
                    self.push_array(child)?;
                }
            }
            other => {
                let width = other.primitive_width().ok_or_else(|| unsupported(other))?;
                // The values, already cut to the array's rows (no `ArrayData` built per column).
                let values = downcast_primitive_array!(
                    array => array.values().inner().clone(),
                    _ => return Err(unsupported(other))
                );
                if values.len() != len * width {
                    return Err(Status::internal(format!(
                        "internal error: a {other} column's buffer does not match its length"
                    )));
                }
                self.push(values);
            }
        }
        Ok(())
    }

    /// Offsets (rebased to start at 0 when the array is a slice) and the values they cover.
    fn push_bytes<T: ByteArrayType>(&mut self, array: &GenericByteArray<T>) -> Result<(), Status> {
        let (first, last) = self.push_offsets(array.offsets(), array.values().len(), "string")?;
        self.push(array.values().slice_with_length(first, last - first));
        Ok(())
    }

    /// Offsets (rebased), then the range of the child array they cover.
    fn push_list<O: OffsetSizeTrait>(&mut self, list: &GenericListArray<O>) -> Result<(), Status> {
        let (first, last) = self.push_offsets(list.offsets(), list.values().len(), "list")?;
        self.push_array(&list.values().slice(first, last - first))
    }

    /// Pushes `offsets`, rebased to start at 0 when they do not, and returns the range of the
    /// `values` values (of a `what` column) they cover, checked to lie inside them.
    fn push_offsets<O: OffsetSizeTrait>(
        &mut self,
        offsets: &OffsetBuffer<O>,
        values: usize,
        what: &str,
    ) -> Result<(usize, usize), Status> {
        let first = offsets.first().map_or(0, |o| o.as_usize());
        let last = offsets.last().map_or(0, |o| o.as_usize());
        if last > values || last < first {
            return Err(Status::internal(format!(
                "internal error: a {what} column's offsets point outside its values"
            )));
        }
        if first == 0 && !offsets.is_empty() {
            self.push(offsets.inner().inner().clone());
        } else {
            let rebased = offsets
                .iter()
                .map(|o| O::from_usize(o.as_usize() - first))
                .collect::<Option<Vec<_>>>()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| vec![O::default()]);
            self.push(Buffer::from_vec(rebased));
        }
        Ok((first, last))
    }

    /// Views, then the data buffers they point into. A slice of a view array still points into
    /// whole data buffers (a row range of a split batch, or batches sharing a Parquet dictionary
    /// page): when those hold far more than the views reach, the reached values are copied into
    /// fresh buffers instead of sending the rest along.
    fn push_views<T: ByteViewType + ?Sized>(&mut self, array: &GenericByteViewArray<T>) {
        // A view's low 32 bits are the value's length; values of up to 12 bytes sit in the view.
        let reached: usize = array
            .views()
            .iter()
            .map(|v| *v as u32 as usize)
            .filter(|len| *len > 12)
            .sum();
        let held: usize = array.data_buffers().iter().map(Buffer::len).sum();
        let compacted;
        let array = if held > 2 * reached + 64 * 1024 {
            compacted = array.gc();
            &compacted
        } else {
            array
        };
        self.push(array.views().inner().clone());
        for buffer in array.data_buffers() {
            self.push(buffer.clone());
        }
        self.variadic_counts.push(array.data_buffers().len() as i64);
    }

    /// Appends `buffer`: shared when large, copied when small (a lookup's answer is a few bytes
    /// per column, where a shared piece each would cost more than the copy), then its padding.
    fn push(&mut self, buffer: Buffer) {
        let len = buffer.len();
        self.buffers
            .push(ipc::Buffer::new(self.len as i64, len as i64));
        if len <= COPIED_UP_TO {
            self.copied.extend_from_slice(buffer.as_slice());
        } else {
            self.flush_copied();
            self.pieces.push(Bytes::from_owner(Shared(buffer)));
        }
        let padded = len.next_multiple_of(ALIGNMENT);
        self.copied.extend_from_slice(&PADDING[..padded - len]);
        self.len += padded;
    }

    /// Ends the piece of copied bytes.
    fn flush_copied(&mut self) {
        if !self.copied.is_empty() {
            self.pieces.push(self.copied.split().freeze());
        }
    }

    /// The message: its IPC header, then the body.
    fn into_message(mut self, rows: usize) -> Result<Message, Status> {
        self.flush_copied();
        // The header's tables, and 16 bytes per node and per buffer (a few more per vector).
        let mut fbb = flatbuffers::FlatBufferBuilder::with_capacity(
            128 + 16 * (self.nodes.len() + self.buffers.len() + self.variadic_counts.len()),
        );
        let nodes = fbb.create_vector(&self.nodes);
        let buffers = fbb.create_vector(&self.buffers);
        let variadic_counts =
            (!self.variadic_counts.is_empty()).then(|| fbb.create_vector(&self.variadic_counts));
        let mut batch = ipc::RecordBatchBuilder::new(&mut fbb);
        batch.add_length(rows as i64);
        batch.add_nodes(nodes);
        batch.add_buffers(buffers);
        if let Some(counts) = variadic_counts {
            batch.add_variadicBufferCounts(counts);
        }
        let batch = batch.finish().as_union_value();
        let mut message = ipc::MessageBuilder::new(&mut fbb);
        message.add_version(ipc::MetadataVersion::V5);
        message.add_header_type(ipc::MessageHeader::RecordBatch);
        message.add_bodyLength(self.len as i64);
        message.add_header(batch);
        let message = message.finish();
        fbb.finish(message, None);
        let header =
            FlightData::new().with_data_header(Bytes::copy_from_slice(fbb.finished_data()));
        frame(&header, self.pieces, self.len)
    }
}

/// An arrow buffer lent to `Bytes` (which then keeps it alive).
struct Shared(Buffer);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// Prefixes `body` (`body_len` bytes in pieces) with the gRPC length and the protobuf encoding of
/// `head`'s other fields, ending with the body field's tag and length.
fn frame(head: &FlightData, mut body: Vec<Bytes>, body_len: usize) -> Result<Message, Status> {
    let body_field = if body_len == 0 {
        0
    } else {
        key_len(DATA_BODY_FIELD) + encoded_len_varint(body_len as u64) + body_len
    };
    let head_len = head.encoded_len();
    let len = head_len + body_field;
    let len = u32::try_from(len).map_err(|_| {
        Status::internal(format!(
            "internal error: a message of {len} bytes is too large for gRPC"
        ))
    })?;
    let mut prefix = BytesMut::with_capacity(5 + head_len + 16);
    prefix.put_u8(0);
    prefix.put_u32(len);
    head.encode_raw(&mut prefix);
    if body_len > 0 {
        encode_key(DATA_BODY_FIELD, WireType::LengthDelimited, &mut prefix);
        encode_varint(body_len as u64, &mut prefix);
    }
    body.insert(0, prefix.freeze());
    Ok(body)
}

fn unsupported(data_type: &DataType) -> Status {
    Status::internal(format!(
        "internal error: {data_type} columns cannot be sent from their own buffers"
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, BinaryViewArray, BooleanArray, Decimal128Array, DictionaryArray, Float64Array,
        Int32Array, Int64Array, LargeStringArray, StringArray, StringViewArray,
        TimestampMicrosecondArray,
    };
    use arrow::array::{FixedSizeListArray, ListArray, ListBuilder, StringBuilder, StructArray};
    use arrow::datatypes::{Field, Float32Type, Int32Type};
    use arrow_flight::utils::flight_data_to_batches;

    use super::*;

    /// What a client reads: each message joined, unframed and decoded as protobuf.
    fn received(messages: &[Message]) -> Vec<FlightData> {
        messages
            .iter()
            .map(|m| {
                let bytes: Vec<u8> = m.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(bytes[0], 0, "uncompressed");
                let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
                assert_eq!(len, bytes.len() - 5, "the gRPC length covers the message");
                FlightData::decode(&bytes[5..]).expect("a FlightData")
            })
            .collect()
    }

    /// Sends `batch` and reads it back as a client would.
    fn round_trip(batch: &RecordBatch) -> Vec<RecordBatch> {
        assert!(shares_buffers(&batch.schema()));
        let mut all = vec![schema_message(&batch.schema()).expect("schema")];
        all.extend(batch_messages(batch).expect("messages"));
        flight_data_to_batches(&received(&all)).expect("decodes")
    }

    fn every_type(rows: i64) -> RecordBatch {
        let n = rows as usize;
        let embedding = ListArray::from_iter_primitive::<Float32Type, _, _>((0..rows).map(|i| {
            (i % 10 != 3).then(|| (0..i % 5).map(move |j| (j % 3 != 2).then_some((i * j) as f32)))
        }));
        let quad = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
            (0..rows).map(|i| (i % 6 != 5).then(|| (0..4).map(move |j| Some((i + j) as f32)))),
            4,
        );
        let mut tags = ListBuilder::new(StringBuilder::new());
        for i in 0..rows {
            for j in 0..i % 3 {
                tags.values().append_value(format!("tag-{i}-{j}"));
            }
            tags.append(i % 8 != 7);
        }
        let tags = tags.finish();
        let pair = StructArray::try_new(
            vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Utf8, true),
            ]
            .into(),
            vec![
                Arc::new(Int64Array::from_iter(
                    (0..rows).map(|i| (i % 4 != 0).then_some(-i)),
                )),
                Arc::new(StringArray::from_iter(
                    (0..rows).map(|i| (i % 3 != 0).then(|| i.to_string())),
                )),
            ],
            Some((0..n).map(|i| i % 9 != 4).collect()),
        )
        .expect("struct");
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("score", DataType::Float64, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("note", DataType::LargeUtf8, true),
            Field::new("blob", DataType::Binary, true),
            Field::new(
                "ts",
                DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None),
                true,
            ),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new("small", DataType::Int32, true),
            Field::new("label", DataType::Utf8View, true),
            Field::new("bytes", DataType::BinaryView, true),
            Field::new("embedding", embedding.data_type().clone(), true),
            Field::new("quad", quad.data_type().clone(), true),
            Field::new("tags", tags.data_type().clone(), true),
            Field::new("pair", pair.data_type().clone(), true),
        ]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from_iter_values(0..rows)),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 3 != 0).then_some(i as f64 / 7.0)),
            )),
            Arc::new(BooleanArray::from_iter(
                (0..rows).map(|i| (i % 5 != 0).then_some(i % 2 == 0)),
            )),
            Arc::new(StringArray::from_iter(
                (0..rows).map(|i| (i % 4 != 0).then(|| format!("user-{i}"))),
            )),
            Arc::new(LargeStringArray::from_iter_values(
                (0..rows).map(|i| "x".repeat(i as usize % 9)),
            )),
            Arc::new(BinaryArray::from_iter(
                (0..rows).map(|i| (i % 6 != 0).then(|| vec![i as u8; 3])),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter(
                (0..rows).map(|i| (i % 7 != 0).then_some(i * 1_000_000)),
            )),
            Arc::new(
                Decimal128Array::from_iter(
                    (0..rows).map(|i| (i % 8 != 0).then_some(i as i128 * 101)),
                )
                .with_precision_and_scale(12, 2)
                .expect("decimal"),
            ),
            Arc::new(Int32Array::from_iter(
                (0..n).map(|i| (i % 9 != 0).then_some(i as i32)),
            )),
            Arc::new(StringViewArray::from_iter((0..rows).map(|i| {
                (i % 3 != 1).then(|| match i % 2 {
                    0 => format!("s{i}"),
                    _ => format!("a value longer than twelve bytes, {i}"),
                })
            }))),
            Arc::new(BinaryViewArray::from_iter(
                (0..rows).map(|i| (i % 4 != 1).then(|| vec![i as u8; (i % 30) as usize])),
            )),
            Arc::new(embedding),
            Arc::new(quad),
            Arc::new(tags),
            Arc::new(pair),
        ];
        RecordBatch::try_new(Arc::new(schema), columns).expect("batch")
    }

    #[test]
    fn every_shared_type_reads_back_as_sent() {
        let batch = every_type(100);
        assert_eq!(round_trip(&batch), vec![batch]);
    }

    #[test]
    fn slices_read_back_as_sent_even_at_offsets_that_cut_bytes() {
        let batch = every_type(100);
        for (start, len) in [(3, 50), (8, 16), (0, 1), (99, 1), (37, 0)] {
            let slice = batch.slice(start, len);
            let read = round_trip(&slice);
            let read = arrow::compute::concat_batches(&batch.schema(), &read).expect("concat");
            assert_eq!(read, slice, "slice {start}+{len}");
        }
    }

    #[test]
    fn large_batches_are_split_into_messages_clients_accept() {
        let batch = every_type(200_000);
        let messages = batch_messages(&batch).expect("messages");
        assert!(
            messages.len() > 1,
            "a {} MiB batch is one message",
            batch.get_array_memory_size() >> 20
        );
        for m in &messages {
            let len: usize = m.iter().map(Bytes::len).sum();
            assert!(
                len <= MAX_MESSAGE_BYTES + 64 * 1024,
                "a message of {len} bytes"
            );
        }
        let read = round_trip(&batch);
        let read = arrow::compute::concat_batches(&batch.schema(), &read).expect("concat");
        assert_eq!(read, batch);
    }

    #[test]
    fn a_few_huge_rows_are_sent_a_row_or_two_per_message() {
        let big = "y".repeat(1_500_000);
        let schema = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, true)]));
        let strings = StringArray::from(vec![
            Some(big.as_str()),
            None,
            Some(&big),
            Some("z"),
            Some(&big),
        ]);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(strings)]).expect("batch");
        let messages = batch_messages(&batch).expect("messages");
        for m in &messages {
            let len: usize = m.iter().map(Bytes::len).sum();
            assert!(len < 4 * 1024 * 1024, "a message of {len} bytes");
        }
        let read = round_trip(&batch);
        let read = arrow::compute::concat_batches(&batch.schema(), &read).expect("concat");
        assert_eq!(read, batch);
    }

    #[test]
    fn a_small_slice_of_views_does_not_carry_the_whole_data_buffer() {
        let long = |i: usize| format!("a value well over twelve bytes long, number {i}");
        let views = StringViewArray::from_iter_values((0..100_000).map(long));
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            DataType::Utf8View,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(views)]).expect("batch");
        let slice = batch.slice(500, 10);
        let messages = batch_messages(&slice).expect("messages");
        let len: usize = messages.iter().flatten().map(Bytes::len).sum();
        assert!(len < 4096, "10 values took {len} bytes");
        assert_eq!(round_trip(&slice), vec![slice]);
        // The whole array shares its buffers.
        let messages = batch_messages(&batch).expect("messages");
        let len: usize = messages.iter().flatten().map(Bytes::len).sum();
        assert!(len < 8 * 1024 * 1024, "{len} bytes");
    }

    #[test]
    fn a_schema_answered_again_is_encoded_once() {
        let schemas = SchemaMessages::default();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let first = schemas.get(&schema).expect("encodes");
        let again = schemas.get(&schema).expect("kept");
        assert_eq!(first, again);
        assert_eq!(
            first[0].as_ptr(),
            again[0].as_ptr(),
            "the kept message, not a new one"
        );
        // The key is the schema's identity: an equal schema elsewhere is encoded, to the same bytes.
        let equal = Arc::new((*schema).clone());
        let other = schemas.get(&equal).expect("encodes");
        assert_ne!(first[0].as_ptr(), other[0].as_ptr());
        assert_eq!(first, other);
        let bytes: Vec<u8> = first.iter().flat_map(|p| p.iter().copied()).collect();
        let data = FlightData::decode(&bytes[5..]).expect("FlightData");
        let decoded = Schema::try_from(&data).expect("a schema message");
        assert_eq!(decoded, *schema);
        // Only the recent ones are kept.
        for _ in 0..KEPT_SCHEMAS {
            schemas.get(&Arc::new((*schema).clone())).expect("encodes");
        }
        let later = schemas.get(&schema).expect("encodes");
        assert_ne!(first[0].as_ptr(), later[0].as_ptr(), "encoded anew");
    }

    #[test]
    fn column_buffers_are_sent_without_copying() {
        let values = Int64Array::from_iter_values(0..1000);
        let address = values.values().inner().as_ptr();
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("batch");
        let messages = batch_messages(&batch).expect("messages");
        assert!(
            messages[0].iter().any(|piece| piece.as_ptr() == address),
            "no piece points at the column's own buffer"
        );
    }

    #[test]
    fn dictionaries_are_left_to_arrow_flight() {
        let keys = Int32Array::from(vec![0, 1, 0]);
        let dict = DictionaryArray::<Int32Type>::try_new(
            keys,
            Arc::new(StringArray::from(vec!["a", "b"])),
        )
        .expect("dictionary");
        let schema = Schema::new(vec![Field::new("d", dict.data_type().clone(), false)]);
        assert!(!shares_buffers(&schema));
        let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(dict)]).expect("batch");
        assert!(batch_messages(&batch).is_err(), "refused, not sent wrong");
    }

    #[test]
    fn flight_data_keeps_its_body_and_other_fields() {
        let data = FlightData::new()
            .with_data_header(Bytes::from_static(b"header"))
            .with_app_metadata(Bytes::from_static(b"meta"))
            .with_data_body(Bytes::from(vec![7u8; 100_000]));
        let address = data.data_body.as_ptr();
        let message = flight_data_message(data.clone()).expect("message");
        assert!(message.iter().any(|piece| piece.as_ptr() == address));
        assert_eq!(received(&[message]), vec![data]);
    }

    #[tokio::test]
    async fn the_announced_schema_is_the_one_clients_receive() {
        use arrow_flight::encode::FlightDataEncoderBuilder;
        use futures::TryStreamExt;

        let dict =
            |values: Vec<&str>| -> DictionaryArray<Int32Type> { values.into_iter().collect() };
        let mut tags = ListBuilder::new(arrow::array::StringDictionaryBuilder::<Int32Type>::new());
        tags.values().append_value("a");
        tags.append(true);
        tags.append(true);
        let nested = StructArray::from(vec![(
            Arc::new(Field::new(
                "kind",
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                true,
            )),
            Arc::new(dict(vec!["x", "y"])) as ArrayRef,
        )]);
        let batch = RecordBatch::try_from_iter([
            ("region", Arc::new(dict(vec!["eu", "us"])) as ArrayRef),
            ("tags", Arc::new(tags.finish()) as ArrayRef),
            ("nested", Arc::new(nested) as ArrayRef),
            ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ])
        .expect("batch");
        let data: Vec<FlightData> = FlightDataEncoderBuilder::new()
            .build(futures::stream::iter([Ok(batch.clone())]))
            .try_collect()
            .await
            .expect("encoded");
        let received = flight_data_to_batches(&data).expect("decoded");
        let announced = wire_schema(&batch.schema());
        assert_eq!(received[0].schema().as_ref(), &announced);
        assert!(
            announced
                .fields()
                .iter()
                .all(|f| !format!("{:?}", f.data_type()).contains("Dictionary")),
            "{announced:?}"
        );
        // The shared-buffer path sends the same schema and values.
        let shared = hydrated(&batch.schema()).expect("shareable once decoded");
        assert_eq!(shared.as_ref(), &announced);
        assert_eq!(hydrate(batch, &shared).expect("decoded"), received[0]);
    }
}
