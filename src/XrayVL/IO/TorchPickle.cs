using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;
using static TorchSharp.torch;

namespace XrayVL.IO;

/// <summary>
/// A storage record of a PyTorch checkpoint: one block of raw elements that one or more tensors view.
/// One instance per storage key, so two tensors share memory exactly when they hold the same instance.
/// </summary>
/// <param name="Key">The key the file stores it under (zip: member <c>data/&lt;key&gt;</c>).</param>
/// <param name="ElementCount">Elements of <see cref="DType"/> in the storage (not bytes).</param>
/// <param name="Location">Where it was saved from ("cpu", "cuda:0"); everything loads on the CPU.</param>
public sealed class TorchStorageInfo(string key, ScalarType dtype, long elementCount, string location)
{
    public string Key { get; } = key;
    public ScalarType DType { get; } = dtype;
    public long ElementCount { get; } = elementCount;
    public string Location { get; } = location;
    public long ByteLength => ElementCount * TorchPickle.ElementSize(DType);
}

/// <summary>A tensor as a checkpoint's pickle describes it: a strided view of a storage. No data is read yet.</summary>
public sealed record TorchTensorInfo(TorchStorageInfo Storage, long StorageOffset, long[] Shape, long[] Stride, bool RequiresGrad)
{
    public ScalarType DType => Storage.DType;
    public long ElementCount => Shape.Aggregate(1L, (n, d) => n * d);
}

/// <summary>
/// A Python <c>dict</c> (or, with <see cref="IsOrdered"/>, a <c>collections.OrderedDict</c>) in insertion order.
/// Keys are strings, integers (long), floats, booleans, None is not allowed, tuples (object?[]) compare by value.
/// </summary>
public sealed class PickleDict(bool isOrdered) : OrderedDictionary<object, object?>(PickleKeyComparer.Instance)
{
    public bool IsOrdered { get; } = isOrdered;

    /// <summary>
    /// Instance attributes restored by pickle's BUILD (a state dict's <c>_metadata</c>: per-module versions); data only.
    /// </summary>
    public PickleDict? Attributes { get; internal set; }
}

/// <summary>Structural equality for pickled dict keys: tuples (object?[]) by items, numbers by value.</summary>
public sealed class PickleKeyComparer : IEqualityComparer<object>
{
    public static readonly PickleKeyComparer Instance = new();

    public new bool Equals(object? x, object? y) => (x, y) switch
    {
        (object?[] a, object?[] b) => a.Length == b.Length && a.Zip(b).All(p => p.First is null ? p.Second is null : p.Second is not null && Equals(p.First, p.Second)),
        _ => object.Equals(x, y),
    };

    public int GetHashCode(object obj) => obj is object?[] items
        ? items.Aggregate(17, (h, item) => h * 31 + (item is null ? 0 : GetHashCode(item)))
        : obj.GetHashCode();
}

/// <summary>
/// The subset of Python's pickle format that <c>torch.save</c> writes, read without executing anything.
/// </summary>
/// <remarks>
/// Python values map to: None → null, bool → bool, int → long (<see cref="BigInteger"/> beyond 64 bits), float → double,
/// str → string, bytes → byte[], tuple → object?[], list → List&lt;object?&gt;, dict / OrderedDict → <see cref="PickleDict"/>,
/// tensor → <see cref="TorchTensorInfo"/>, torch.Size → object?[] of long, torch dtype → <see cref="ScalarType"/>,
/// torch.device → its string ("cuda:0").
/// A pickle can name any Python callable (a "global") and ask for it to be called — that is how <c>torch.load</c> comes to
/// execute arbitrary code. Here only the globals in <see cref="AllowedGlobals"/> are understood, each by a fixed rule
/// written below; any other global is refused with an <see cref="XrayVLException"/> naming it, before anything is called.
/// </remarks>
public static class TorchPickle
{
    /// <summary>Nesting deeper than this is refused (a hostile pickle could otherwise exhaust the stack of a tree walk).</summary>
    public const int MaxDepth = 1000;

    private enum GlobalKind { OrderedDict, RebuildTensorV2, RebuildTensor, RebuildParameter, Storage, Size, DType, Device, CodecsEncode, Set }

    private sealed record PickleGlobal(string Module, string Name, GlobalKind Kind, ScalarType DType = ScalarType.Byte)
    {
        public string FullName => Module + "." + Name;
    }

    private static readonly (string Storage, ScalarType Type)[] StorageTypes =
    [
        ("FloatStorage", ScalarType.Float32), ("DoubleStorage", ScalarType.Float64), ("HalfStorage", ScalarType.Float16),
        ("BFloat16Storage", ScalarType.BFloat16), ("LongStorage", ScalarType.Int64), ("IntStorage", ScalarType.Int32),
        ("ShortStorage", ScalarType.Int16), ("CharStorage", ScalarType.Int8), ("ByteStorage", ScalarType.Byte),
        ("BoolStorage", ScalarType.Bool), ("UntypedStorage", ScalarType.Byte),
    ];

    private static readonly (string Name, ScalarType Type)[] DTypeNames =
    [
        ("float32", ScalarType.Float32), ("float", ScalarType.Float32), ("float64", ScalarType.Float64), ("double", ScalarType.Float64),
        ("float16", ScalarType.Float16), ("half", ScalarType.Float16), ("bfloat16", ScalarType.BFloat16),
        ("int64", ScalarType.Int64), ("long", ScalarType.Int64), ("int32", ScalarType.Int32), ("int", ScalarType.Int32),
        ("int16", ScalarType.Int16), ("short", ScalarType.Int16), ("int8", ScalarType.Int8), ("uint8", ScalarType.Byte),
        ("bool", ScalarType.Bool),
    ];

    private static readonly Dictionary<string, PickleGlobal> Allowed = BuildAllowList();

    /// <summary>The only globals a checkpoint may name ("module.name"); everything else is refused.</summary>
    public static IReadOnlyCollection<string> AllowedGlobals => Allowed.Keys;

    private static Dictionary<string, PickleGlobal> BuildAllowList()
    {
        var list = new List<PickleGlobal>
        {
            new("collections", "OrderedDict", GlobalKind.OrderedDict),
            new("torch._utils", "_rebuild_tensor_v2", GlobalKind.RebuildTensorV2),
            new("torch._utils", "_rebuild_tensor", GlobalKind.RebuildTensor),
            new("torch._utils", "_rebuild_parameter", GlobalKind.RebuildParameter),
            new("torch", "Size", GlobalKind.Size),
            new("torch", "device", GlobalKind.Device),
            // Protocol 2 writes bytes as _codecs.encode(latin-1 text, "latin1").
            new("_codecs", "encode", GlobalKind.CodecsEncode),
            new("builtins", "set", GlobalKind.Set), new("__builtin__", "set", GlobalKind.Set),
            new("builtins", "frozenset", GlobalKind.Set), new("__builtin__", "frozenset", GlobalKind.Set),
        };
        list.AddRange(StorageTypes.Select(s => new PickleGlobal("torch", s.Storage, GlobalKind.Storage, s.Type)));
        list.AddRange(DTypeNames.Select(d => new PickleGlobal("torch", d.Name, GlobalKind.DType, d.Type)));
        return list.ToDictionary(g => g.FullName);
    }

    /// <summary>Bytes per element of a storage dtype.</summary>
    public static int ElementSize(ScalarType type) => type switch
    {
        ScalarType.Float64 or ScalarType.Int64 => 8,
        ScalarType.Float32 or ScalarType.Int32 => 4,
        ScalarType.Float16 or ScalarType.BFloat16 or ScalarType.Int16 => 2,
        ScalarType.Int8 or ScalarType.Byte or ScalarType.Bool => 1,
        _ => throw new XrayVLException($"tensor dtype {type} is not read from PyTorch checkpoints"),
    };

    /// <summary>
    /// Reads one pickle from <paramref name="stream"/>, which is left just after its STOP opcode.
    /// Storage references (torch's persistent ids <c>('storage', type, key, location, numel)</c>) resolve to one
    /// <see cref="TorchStorageInfo"/> per key, collected in <paramref name="storages"/>.
    /// </summary>
    /// <param name="source">Names the file in error messages.</param>
    public static object? Load(Stream stream, string source, Dictionary<string, TorchStorageInfo> storages) =>
        new Machine(stream, source, storages).Run();

    /// <summary>Reads one pickle from bytes (see <see cref="Load(Stream, string, Dictionary{string, TorchStorageInfo})"/>).</summary>
    public static object? Load(byte[] pickle, string source, Dictionary<string, TorchStorageInfo>? storages = null)
    {
        using var stream = new MemoryStream(pickle, writable: false);
        return Load(stream, source, storages ?? []);
    }

    /// <summary>The Python type name of a value this reader produces (for messages and checks).</summary>
    public static string KindOf(object? value) => value switch
    {
        null => "NoneType",
        bool => "bool",
        long or BigInteger => "int",
        double => "float",
        string => "str",
        byte[] => "bytes",
        object?[] => "tuple",
        List<object?> => "list",
        PickleDict d => d.IsOrdered ? "OrderedDict" : "dict",
        TorchTensorInfo or Tensor => "tensor",
        ScalarType => "torch.dtype",
        HashSet<object> => "set",
        _ => value.GetType().Name,
    };

    // ---------------------------------------------------------------- the machine

    private sealed class Mark
    {
        public static readonly Mark Instance = new();
    }

    private sealed class Machine(Stream stream, string source, Dictionary<string, TorchStorageInfo> storages)
    {
        private readonly List<object?> stack = [];
        private readonly Stack<int> marks = new();
        private readonly Dictionary<long, object?> memo = [];
        private long opcodeOffset;

        public object? Run()
        {
            while (true)
            {
                opcodeOffset = stream.Position;
                int op = stream.ReadByte();
                if (op < 0) throw Error("pickle ends before its STOP opcode (truncated file?)");
                switch (op)
                {
                    case 0x80: ReadByte(); break;                                  // PROTO n
                    case 0x95: ReadBytes(8); break;                                // FRAME: a length hint only
                    case '.':                                                      // STOP
                        if (stack.Count != 1 || marks.Count != 0) throw Error("malformed pickle: STOP with an unbalanced stack");
                        return stack[0];
                    case '(': marks.Push(stack.Count); break;                      // MARK
                    case '0': Pop(); break;                                        // POP
                    case '1': PopMark(); break;                                    // POP_MARK
                    case '2': Push(Peek()); break;                                 // DUP
                    case 'N': Push(null); break;
                    case 0x88: Push(true); break;                                  // NEWTRUE
                    case 0x89: Push(false); break;                                 // NEWFALSE
                    case 'K': Push((long)ReadByte()); break;                       // BININT1
                    case 'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(ReadBytes(2))); break; // BININT2
                    case 'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(ReadBytes(4))); break;  // BININT
                    case 0x8a: Push(ReadLong(ReadByte())); break;                  // LONG1
                    case 0x8b: Push(ReadLong(ReadLength(4))); break;               // LONG4
                    case 'I': Push(ParseIntLine(ReadLine())); break;               // INT (protocol 0; "00"/"01" are bools)
                    case 'L': Push(ParseInteger(ReadLine().TrimEnd('L'))); break;  // LONG (protocol 0)
                    case 'G': Push(BinaryPrimitives.ReadDoubleBigEndian(ReadBytes(8))); break; // BINFLOAT
                    case 'F': Push(ParseFloat(ReadLine())); break;                 // FLOAT (protocol 0)
                    case 'X': Push(Utf8(ReadBytes(ReadLength(4)))); break;         // BINUNICODE
                    case 0x8c: Push(Utf8(ReadBytes(ReadByte()))); break;           // SHORT_BINUNICODE
                    case 0x8d: Push(Utf8(ReadBytes(ReadLength(8)))); break;        // BINUNICODE8
                    case 'V': Push(UnescapeRawUnicode(ReadLine())); break;         // UNICODE (protocol 0)
                    // Python 2 str: torch.load decodes it as UTF-8 text.
                    case 'T': Push(Utf8(ReadBytes(ReadLength(4)))); break;         // BINSTRING
                    case 'U': Push(Utf8(ReadBytes(ReadByte()))); break;            // SHORT_BINSTRING
                    case 'B': Push(ReadBytes(ReadLength(4))); break;               // BINBYTES
                    case 'C': Push(ReadBytes(ReadByte())); break;                  // SHORT_BINBYTES
                    case 0x8e: Push(ReadBytes(ReadLength(8))); break;              // BINBYTES8
                    case 0x96: Push(ReadBytes(ReadLength(8))); break;              // BYTEARRAY8 (as bytes)
                    case ')': Push(Array.Empty<object?>()); break;                 // EMPTY_TUPLE
                    case 't': Push(PopMark().ToArray()); break;                    // TUPLE
                    case 0x85: Push(new[] { Pop() }); break;                       // TUPLE1
                    case 0x86: { var b = Pop(); var a = Pop(); Push(new[] { a, b }); break; }                  // TUPLE2
                    case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new[] { a, b, c }); break; } // TUPLE3
                    case ']': Push(new List<object?>()); break;                    // EMPTY_LIST
                    case 'l': Push(PopMark()); break;                              // LIST
                    case 'a': { var item = Pop(); AsList(Peek()).Add(item); break; }               // APPEND
                    case 'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; }    // APPENDS
                    case '}': Push(new PickleDict(isOrdered: false)); break;       // EMPTY_DICT
                    case 'd': { var dict = new PickleDict(isOrdered: false); SetItems(dict, PopMark()); Push(dict); break; } // DICT
                    case 's': { var value = Pop(); var key = Pop(); SetItems(AsDict(Peek()), [key, value]); break; }       // SETITEM
                    case 'u': { var items = PopMark(); SetItems(AsDict(Peek()), items); break; }                           // SETITEMS
                    case 0x8f: Push(new HashSet<object>(PickleKeyComparer.Instance)); break;                                 // EMPTY_SET
                    case 0x90: { var items = PopMark(); AddToSet(Peek(), items); break; }                                   // ADDITEMS
                    case 0x91: { var set = new HashSet<object>(PickleKeyComparer.Instance); AddToSet(set, PopMark()); Push(set); break; } // FROZENSET
                    case 'g': Push(Recall(ToLong(ParseInteger(ReadLine())))); break;       // GET
                    case 'h': Push(Recall(ReadByte())); break;                     // BINGET
                    case 'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4)))); break; // LONG_BINGET
                    case 'p': memo[ToLong(ParseInteger(ReadLine()))] = Peek(); break;                   // PUT
                    case 'q': memo[ReadByte()] = Peek(); break;                                        // BINPUT
                    case 'r': memo[BinaryPrimitives.ReadUInt32LittleEndian(ReadBytes(4))] = Peek(); break; // LONG_BINPUT
                    case 0x94: memo[memo.Count] = Peek(); break;                                       // MEMOIZE
                    case 'c': Push(Global(ReadLine(), ReadLine())); break;        // GLOBAL
                    case 0x93: { var name = Pop(); var module = Pop(); Push(Global(AsString(module), AsString(name))); break; } // STACK_GLOBAL
                    case 'R': { var args = Pop(); var callable = Pop(); Push(Call(callable, AsTuple(args))); break; }            // REDUCE
                    case 0x81: { var args = Pop(); var cls = Pop(); Push(New(cls, AsTuple(args))); break; }                    // NEWOBJ
                    case 0x92: { Pop(); var args = Pop(); var cls = Pop(); Push(New(cls, AsTuple(args))); break; }             // NEWOBJ_EX
                    case 'b': { var state = Pop(); Build(Peek(), state); break; }  // BUILD
                    case 'Q': Push(PersistentLoad(Pop())); break;                  // BINPERSID
                    case 'P': Push(PersistentLoad(ReadLine())); break;             // PERSID
                    case 'i': throw Refuse(ReadLine() + "." + ReadLine());        // INST: instantiates a named class
                    case 'o':                                                      // OBJ: instantiates the class on the stack
                        {
                            var items = PopMark();
                            throw items.Count > 0 && items[0] is PickleGlobal g ? Refuse(g.FullName) : Error("malformed OBJ opcode");
                        }
                    case 0x82 or 0x83 or 0x84:
                        throw Error("pickle uses the extension registry (EXT opcodes), which names code; refused");
                    case 0x97 or 0x98:
                        throw Error("pickle uses out-of-band buffers (protocol 5), which torch.save never writes");
                    default:
                        throw Error($"unknown pickle opcode 0x{op:x2} (not a PyTorch checkpoint, or a corrupt one)");
                }
            }
        }

        // ---- stack

        private void Push(object? value) => stack.Add(value);

        private object? Pop()
        {
            if (stack.Count == 0 || (marks.Count > 0 && stack.Count <= marks.Peek())) throw Error("malformed pickle: stack underflow");
            var value = stack[^1];
            stack.RemoveAt(stack.Count - 1);
            return value;
        }

        private object? Peek()
        {
            if (stack.Count == 0 || (marks.Count > 0 && stack.Count <= marks.Peek())) throw Error("malformed pickle: stack underflow");
            return stack[^1];
        }

        private List<object?> PopMark()
        {
            if (marks.Count == 0) throw Error("malformed pickle: no MARK");
            int start = marks.Pop();
            var items = stack.GetRange(start, stack.Count - start);
            stack.RemoveRange(start, stack.Count - start);
            return items;
        }

        private object? Recall(long index) =>
            memo.TryGetValue(index, out var value) ? value : throw Error($"malformed pickle: memo entry {index} was never stored");

        // ---- reading

        private int ReadByte()
        {
            int b = stream.ReadByte();
            return b >= 0 ? b : throw Error("pickle ends early (truncated file?)");
        }

        private long ReadLength(int bytes)
        {
            var raw = ReadBytes(bytes);
            long n = bytes == 4 ? BinaryPrimitives.ReadUInt32LittleEndian(raw) : BinaryPrimitives.ReadInt64LittleEndian(raw);
            if (n < 0 || n > stream.Length - stream.Position)
                throw Error($"pickle item of {n} bytes reaches past the end of the data (truncated file?)");
            return n;
        }

        private byte[] ReadBytes(long count)
        {
            if (count > stream.Length - stream.Position) throw Error("pickle ends early (truncated file?)");
            var buffer = new byte[count];
            stream.ReadExactly(buffer);
            return buffer;
        }

        private string ReadLine()
        {
            var bytes = new List<byte>();
            while (true)
            {
                int b = ReadByte();
                if (b == '\n') break;
                bytes.Add((byte)b);
            }
            if (bytes.Count > 0 && bytes[^1] == '\r') bytes.RemoveAt(bytes.Count - 1);
            return Encoding.UTF8.GetString(bytes.ToArray());
        }

        private string Utf8(byte[] bytes)
        {
            try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes); }
            catch (DecoderFallbackException) { return Encoding.Latin1.GetString(bytes); }
        }

        private object ReadLong(long length)
        {
            // Two's complement, little-endian (LONG1 / LONG4).
            var value = new BigInteger(ReadBytes(length), isUnsigned: false, isBigEndian: false);
            return value >= long.MinValue && value <= long.MaxValue ? (long)value : value;
        }

        private object? ParseIntLine(string text) => text switch
        {
            "00" => false,
            "01" => true,
            _ => ParseInteger(text),
        };

        private object ParseInteger(string text)
        {
            if (long.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long n)) return n;
            if (BigInteger.TryParse(text, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var big)) return big;
            throw Error($"malformed integer '{text}' in pickle");
        }

        private double ParseFloat(string text) =>
            double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) ? d : throw Error($"malformed float '{text}' in pickle");

        private static string UnescapeRawUnicode(string text)
        {
            // raw-unicode-escape: only \uXXXX and \UXXXXXXXX are escapes.
            var sb = new StringBuilder();
            for (int i = 0; i < text.Length; i++)
            {
                if (text[i] == '\\' && i + 5 < text.Length && text[i + 1] == 'u')
                {
                    sb.Append((char)Convert.ToInt32(text.Substring(i + 2, 4), 16));
                    i += 5;
                }
                else if (text[i] == '\\' && i + 9 < text.Length && text[i + 1] == 'U')
                {
                    sb.Append(char.ConvertFromUtf32(Convert.ToInt32(text.Substring(i + 2, 8), 16)));
                    i += 9;
                }
                else sb.Append(text[i]);
            }
            return sb.ToString();
        }

        // ---- containers

        private List<object?> AsList(object? value) =>
            value as List<object?> ?? throw Error($"malformed pickle: APPEND to a {KindOf(value)}");

        private PickleDict AsDict(object? value) =>
            value as PickleDict ?? throw Error($"malformed pickle: SETITEM on a {KindOf(value)}");

        private object?[] AsTuple(object? value) =>
            value as object?[] ?? throw Error($"malformed pickle: call arguments are a {KindOf(value)}, not a tuple");

        private string AsString(object? value) =>
            value as string ?? throw Error($"malformed pickle: expected a string, found a {KindOf(value)}");

        private void SetItems(PickleDict dict, List<object?> items)
        {
            if (items.Count % 2 != 0) throw Error("malformed pickle: odd number of dict items");
            for (int i = 0; i < items.Count; i += 2)
                dict[HashableKey(items[i])] = items[i + 1];
        }

        private void AddToSet(object? target, List<object?> items)
        {
            var set = target as HashSet<object> ?? throw Error($"malformed pickle: ADDITEMS on a {KindOf(target)}");
            foreach (var item in items) set.Add(HashableKey(item));
        }

        private object HashableKey(object? key) => key switch
        {
            string or long or BigInteger or double or bool or byte[] or ScalarType => key,
            object?[] tuple when tuple.All(k => k is null || HashableKey(k) is not null) => tuple,
            _ => throw Error($"dict key of type {KindOf(key)} is not supported"),
        };

        // ---- globals and calls: only the allow-list, each by a fixed rule

        private object Global(string module, string name)
        {
            string full = module + "." + name;
            if (!Allowed.TryGetValue(full, out var global)) throw Refuse(full);
            // A dtype is used as a value, not called.
            return global.Kind == GlobalKind.DType ? global.DType : global;
        }

        private object? Call(object? callable, object?[] args)
        {
            if (callable is not PickleGlobal g) throw Error($"malformed pickle: REDUCE calls a {KindOf(callable)}");
            switch (g.Kind)
            {
                case GlobalKind.OrderedDict:
                    {
                        var dict = new PickleDict(isOrdered: true);
                        if (args.Length == 1 && args[0] is List<object?> pairs)
                        {
                            foreach (var pair in pairs)
                            {
                                if (pair is not object?[] { Length: 2 } kv) throw Error("malformed OrderedDict items");
                                dict[HashableKey(kv[0])] = kv[1];
                            }
                        }
                        else if (args.Length != 0) throw Error($"OrderedDict called with {args.Length} arguments");
                        return dict;
                    }
                case GlobalKind.RebuildTensorV2:
                    // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
                    if (args.Length is < 6 or > 7) throw Error($"{g.FullName} called with {args.Length} arguments, expected 6 or 7");
                    if (args[5] is PickleDict { Count: > 0 }) throw Error("a tensor with backward hooks was saved; hooks are code and are refused");
                    return RebuildTensor(args[0], args[1], args[2], args[3], args[4] is true);
                case GlobalKind.RebuildTensor:
                    // (storage, storage_offset, size, stride): torch before 1.0
                    if (args.Length != 4) throw Error($"{g.FullName} called with {args.Length} arguments, expected 4");
                    return RebuildTensor(args[0], args[1], args[2], args[3], requiresGrad: false);
                case GlobalKind.RebuildParameter:
                    // (data, requires_grad, backward_hooks): a Parameter is its data here.
                    if (args.Length != 3 || args[0] is not TorchTensorInfo data) throw Error($"malformed {g.FullName} call");
                    if (args[2] is PickleDict { Count: > 0 }) throw Error("a parameter with backward hooks was saved; hooks are code and are refused");
                    return data with { RequiresGrad = args[1] is true };
                case GlobalKind.Size:
                    if (args.Length != 1 || args[0] is not object?[] dims || dims.Any(d => d is not long))
                        throw Error("malformed torch.Size");
                    return dims;
                case GlobalKind.Device:
                    if (args.Length is < 1 or > 2 || args[0] is not string type) throw Error("malformed torch.device");
                    return args.Length == 2 && args[1] is long index ? $"{type}:{index}" : type;
                case GlobalKind.CodecsEncode:
                    if (args.Length != 2 || args[0] is not string text || args[1] is not string encoding) throw Error("malformed _codecs.encode call");
                    return encoding.Replace("-", "").Replace("_", "").ToLowerInvariant() switch
                    {
                        "latin1" or "iso88591" => Encoding.Latin1.GetBytes(text),
                        "utf8" => Encoding.UTF8.GetBytes(text),
                        "ascii" => Encoding.ASCII.GetBytes(text),
                        _ => throw Error($"_codecs.encode with encoding '{encoding}' is not supported"),
                    };
                case GlobalKind.Set:
                    {
                        var set = new HashSet<object>(PickleKeyComparer.Instance);
                        if (args.Length == 1 && args[0] is List<object?> items) AddToSet(set, items);
                        else if (args.Length != 0) throw Error("malformed set");
                        return set;
                    }
                default:
                    throw Error($"{g.FullName} cannot be called");
            }
        }

        private object New(object? cls, object?[] args)
        {
            // cls.__new__(cls, *args): only OrderedDict is a class the allow-list creates this way.
            if (cls is PickleGlobal { Kind: GlobalKind.OrderedDict } && args.Length == 0) return new PickleDict(isOrdered: true);
            throw cls is PickleGlobal g ? Error($"{g.FullName} cannot be instantiated by NEWOBJ") : Error("malformed NEWOBJ");
        }

        private void Build(object? target, object? state)
        {
            // An OrderedDict's instance attributes (a state dict's _metadata); nothing else takes state.
            if (target is PickleDict dict && state is PickleDict attributes)
            {
                dict.Attributes = attributes;
                return;
            }
            throw Error($"BUILD with {KindOf(state)} state on a {KindOf(target)} is not supported");
        }

        private TorchTensorInfo RebuildTensor(object? storage, object? offset, object? size, object? stride, bool requiresGrad)
        {
            if (storage is not TorchStorageInfo s) throw Error($"tensor rebuilt from a {KindOf(storage)}, not a storage");
            if (offset is not long off || off < 0) throw Error("tensor storage offset is not a non-negative integer");
            long[] shape = Longs(size, "size");
            long[] strides = Longs(stride, "stride");
            if (shape.Length != strides.Length) throw Error($"tensor has {shape.Length} sizes but {strides.Length} strides");
            if (shape.Any(d => d < 0) || strides.Any(d => d < 0)) throw Error("tensor has a negative size or stride");
            // The furthest element the view reaches must lie inside its storage.
            if (shape.All(d => d > 0))
            {
                long last;
                try { last = checked(off + shape.Zip(strides).Sum(p => checked((p.First - 1) * p.Second))); }
                catch (OverflowException) { throw Error("tensor view overflows"); }
                if (last >= s.ElementCount)
                    throw Error($"tensor view (offset {off}, size [{string.Join(", ", shape)}], stride [{string.Join(", ", strides)}]) " +
                                $"reaches element {last} of storage '{s.Key}', which holds {s.ElementCount}");
            }
            return new TorchTensorInfo(s, off, shape, strides, requiresGrad);
        }

        private long[] Longs(object? value, string what) =>
            value is object?[] items && items.All(i => i is long) ? items.Select(i => (long)i!).ToArray()
                : throw Error($"tensor {what} is not a tuple of integers");

        private TorchStorageInfo PersistentLoad(object? id)
        {
            // ('storage', storage_type, key, location, numel) — the legacy format adds a sixth item, view_metadata.
            if (id is not object?[] { Length: 5 or 6 } t || t[0] is not "storage")
                throw Error($"unsupported persistent id ({KindOf(id)}); only torch storages are read");
            if (t[1] is not PickleGlobal { Kind: GlobalKind.Storage } type) throw Error("persistent id names no storage type");
            if (t[2] is not string key || t[3] is not string location || t[4] is not long numel || numel < 0)
                throw Error("malformed storage persistent id");
            if (t.Length == 6 && t[5] is not null)
                throw Error("storage views of the pre-1.0 format are not supported");
            if (storages.TryGetValue(key, out var known))
            {
                if (known.DType != type.DType || known.ElementCount != numel)
                    throw Error($"storage '{key}' is described twice with different types or sizes");
                return known;
            }
            var storage = new TorchStorageInfo(key, type.DType, numel, location);
            storages[key] = storage;
            return storage;
        }

        private long ToLong(object value) => value is long n ? n : throw Error("memo index out of range");

        private XrayVLException Refuse(string global) =>
            new($"{source}: refuses pickled global {global}: a checkpoint may only hold tensors and plain containers, " +
                "and naming other Python code is how pickles execute it");

        private XrayVLException Error(string message) => new($"{source}: {message} (pickle offset {opcodeOffset})");
    }
}
