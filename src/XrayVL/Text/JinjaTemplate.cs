using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace XrayVL.Text;

/// <summary>
/// A Jinja2 template, for the subset that Hugging Face chat templates (tokenizer_config.json's <c>chat_template</c>) use,
/// rendered as transformers' <c>apply_chat_template</c> sets up jinja2: trim_blocks and lstrip_blocks on, undefined
/// values print as "" (jinja2's default Undefined), <c>raise_exception(msg)</c> and a <c>tojson</c> that writes
/// <c>json.dumps(x, ensure_ascii=False)</c>.
/// <para>
/// Statements: for (loop.*, inline <c>if</c> filter, else, break/continue), if/elif/else, set (names, tuples,
/// <c>ns.attr</c>, block set), macro, generation. Expressions: literals, lists, dicts, tuples, attribute / subscript /
/// slice access, arithmetic, <c>~</c>, comparisons, <c>and or not in</c>, <c>is</c> tests, ternaries, filters,
/// string and dict methods, and the globals range, namespace, dict and raise_exception.
/// </para>
/// </summary>
public sealed class JinjaTemplate
{
    private readonly List<Node> body;

    private JinjaTemplate(List<Node> body) => this.body = body;

    /// <summary>Parses <paramref name="source"/>; a syntax error is an <see cref="XrayVLException"/> naming its line and column.</summary>
    public static JinjaTemplate Parse(string source)
    {
        ArgumentNullException.ThrowIfNull(source);
        // jinja2 turns every line ending into "\n" and, without keep_trailing_newline (transformers does not set it),
        // drops one newline at the very end of the template.
        string src = source.Replace("\r\n", "\n").Replace('\r', '\n');
        if (src.EndsWith('\n')) src = src[..^1];
        var tokens = Lexer.Lex(src);
        return new JinjaTemplate(new Parser(tokens).ParseTemplate());
    }

    /// <summary>
    /// Renders with <paramref name="variables"/> (string, bool, integers, double, null, lists and string-keyed
    /// dictionaries of those; System.Text.Json elements too). Runtime errors and <c>raise_exception</c> throw
    /// <see cref="XrayVLException"/>; raise_exception's message is the template's own.
    /// </summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        ArgumentNullException.ThrowIfNull(variables);
        var root = new Scope(null);
        foreach (var (name, fn) in Globals) root.Vars[name] = fn;
        foreach (var (name, value) in variables) root.Vars[name] = Import(value, name);
        var output = new StringBuilder();
        RenderNodes(body, root, output);
        return output.ToString();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Errors and positions

    private readonly record struct Loc(int Line, int Column)
    {
        public override string ToString() => $"line {Line}, column {Column}";
    }

    private static XrayVLException Error(Loc at, string what) => new($"Jinja template error at {at}: {what}.");

    // ---------------------------------------------------------------------------------------------------------------
    // Lexer: splits the source into text and tag tokens, applying jinja2's whitespace control as its lexer does.

    private enum Tk { Data, VarBegin, VarEnd, BlockBegin, BlockEnd, Name, String, Int, Float, Op, Eof }

    private sealed record Token(Tk Kind, string Text, Loc At, object? Value = null)
    {
        public bool Is(string op) => Kind == Tk.Op && Text == op;
        public bool IsName(string name) => Kind == Tk.Name && Text == name;

        public string Describe() => Kind switch
        {
            Tk.Eof => "the end of the template",
            Tk.VarEnd => "'}}'",
            Tk.BlockEnd => "'%}'",
            Tk.Data => "text",
            Tk.String => "a string",
            _ => $"'{Text}'",
        };
    }

    private static class Lexer
    {
        private static readonly string[] TwoCharOps = ["//", "**", "==", "!=", "<=", ">="];
        private const string OneCharOps = "+-*/%~<>=()[]{},.:|";

        public static List<Token> Lex(string src)
        {
            var lineStarts = new List<int> { 0 };
            for (int i = 0; i < src.Length; i++) if (src[i] == '\n') lineStarts.Add(i + 1);
            Loc At(int index)
            {
                int line = lineStarts.BinarySearch(index);
                if (line < 0) line = ~line - 1;
                return new Loc(line + 1, index - lineStarts[line] + 1);
            }

            var tokens = new List<Token>();
            int pos = 0;
            // Whether the text about to be read starts a line: lstrip_blocks strips indentation before a block tag
            // only when nothing but spaces precedes it on its line.
            bool lineStarting = true;
            while (true)
            {
                int open = NextTag(src, pos);
                string data = src[pos..(open < 0 ? src.Length : open)];
                if (open < 0)
                {
                    if (data.Length > 0) tokens.Add(new Token(Tk.Data, data, At(pos)));
                    break;
                }
                char kind = src[open + 1];
                char sign = open + 2 < src.Length ? src[open + 2] : '\0';
                if (sign == '-') data = data.TrimEnd();
                else if (sign != '+' && kind != '{')
                {
                    int lineStart = data.LastIndexOf('\n') + 1;
                    if ((lineStart > 0 || lineStarting) && lineStart < data.Length && IsBlank(data, lineStart)) data = data[..lineStart];
                }
                if (data.Length > 0) tokens.Add(new Token(Tk.Data, data, At(pos)));

                int inner = open + 2 + (sign is '-' or '+' ? 1 : 0);
                Loc tagAt = At(open);
                if (kind == '#')
                {
                    int close = src.IndexOf("#}", inner, StringComparison.Ordinal);
                    if (close < 0) throw Error(tagAt, "comment '{#' is not closed with '#}'");
                    char endSign = close - 1 >= inner ? src[close - 1] : '\0';
                    pos = AfterTag(src, close + 2, endSign, trimNewline: true, ref lineStarting);
                    continue;
                }
                bool block = kind == '%';
                tokens.Add(new Token(block ? Tk.BlockBegin : Tk.VarBegin, block ? "{%" : "{{", tagAt));
                string closer = block ? "%}" : "}}";
                int i = inner, depth = 0;
                while (true)
                {
                    while (i < src.Length && char.IsWhiteSpace(src[i])) i++;
                    if (i >= src.Length) throw Error(tagAt, $"'{src.Substring(open, 2)}' is not closed with '{closer}'");
                    // jinja2 only ends a tag outside brackets, so "{{ {'a': {'b': 1}} }}" is one expression.
                    if (depth == 0)
                    {
                        char c0 = src[i];
                        if ((c0 == '-' || (block && c0 == '+')) && string.CompareOrdinal(src, i + 1, closer, 0, 2) == 0)
                        {
                            tokens.Add(new Token(block ? Tk.BlockEnd : Tk.VarEnd, closer, At(i)));
                            pos = AfterTag(src, i + 3, c0, trimNewline: block, ref lineStarting);
                            break;
                        }
                        if (string.CompareOrdinal(src, i, closer, 0, 2) == 0)
                        {
                            tokens.Add(new Token(block ? Tk.BlockEnd : Tk.VarEnd, closer, At(i)));
                            pos = AfterTag(src, i + 2, '\0', trimNewline: block, ref lineStarting);
                            break;
                        }
                    }
                    i = LexOne(src, i, tokens, At, ref depth);
                }
            }
            tokens.Add(new Token(Tk.Eof, "", At(src.Length)));
            return tokens;
        }

        private static bool IsBlank(string s, int from)
        {
            for (int i = from; i < s.Length; i++) if (!char.IsWhiteSpace(s[i])) return false;
            return true;
        }

        /// <summary>The index of the next "{{", "{%" or "{#", or -1.</summary>
        private static int NextTag(string src, int from)
        {
            for (int i = src.IndexOf('{', from); i >= 0 && i + 1 < src.Length; i = src.IndexOf('{', i + 1))
                if (src[i + 1] is '{' or '%' or '#') return i;
            return -1;
        }

        /// <summary>
        /// After a tag's closing delimiter: "-" strips all whitespace that follows; a block or comment end without
        /// "+" drops one newline (trim_blocks).
        /// </summary>
        private static int AfterTag(string src, int p, char sign, bool trimNewline, ref bool lineStarting)
        {
            int start = p;
            if (sign == '-') while (p < src.Length && char.IsWhiteSpace(src[p])) p++;
            else if (sign != '+' && trimNewline && p < src.Length && src[p] == '\n') p++;
            lineStarting = p > start && src[p - 1] == '\n';
            return p;
        }

        private static int LexOne(string src, int i, List<Token> tokens, Func<int, Loc> at, ref int depth)
        {
            char c = src[i];
            Loc loc = at(i);
            if (char.IsAsciiLetter(c) || c == '_')
            {
                int j = i + 1;
                while (j < src.Length && (char.IsAsciiLetterOrDigit(src[j]) || src[j] == '_')) j++;
                tokens.Add(new Token(Tk.Name, src[i..j], loc));
                return j;
            }
            if (char.IsAsciiDigit(c))
            {
                int j = i;
                bool isFloat = false;
                while (j < src.Length && char.IsAsciiDigit(src[j])) j++;
                if (j + 1 < src.Length && src[j] == '.' && char.IsAsciiDigit(src[j + 1]))
                {
                    isFloat = true;
                    j++;
                    while (j < src.Length && char.IsAsciiDigit(src[j])) j++;
                }
                if (j < src.Length && src[j] is 'e' or 'E')
                {
                    int k = j + 1;
                    if (k < src.Length && src[k] is '+' or '-') k++;
                    if (k < src.Length && char.IsAsciiDigit(src[k]))
                    {
                        isFloat = true;
                        j = k;
                        while (j < src.Length && char.IsAsciiDigit(src[j])) j++;
                    }
                }
                string text = src[i..j];
                if (isFloat) tokens.Add(new Token(Tk.Float, text, loc, double.Parse(text, NumberStyles.Float, CultureInfo.InvariantCulture)));
                else if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long n)) tokens.Add(new Token(Tk.Int, text, loc, n));
                else throw Error(loc, $"integer {text} is too large");
                return j;
            }
            if (c is '\'' or '"') return LexString(src, i, tokens, loc);
            foreach (string op in TwoCharOps)
            {
                if (string.CompareOrdinal(src, i, op, 0, 2) == 0)
                {
                    tokens.Add(new Token(Tk.Op, op, loc));
                    return i + 2;
                }
            }
            if (OneCharOps.Contains(c))
            {
                if (c is '(' or '[' or '{') depth++;
                else if (c is ')' or ']' or '}')
                {
                    if (depth == 0) throw Error(loc, $"unexpected '{c}'");
                    depth--;
                }
                tokens.Add(new Token(Tk.Op, c.ToString(), loc));
                return i + 1;
            }
            throw Error(loc, $"unexpected character '{c}'");
        }

        /// <summary>A quoted string with Python's escapes (jinja2 decodes literals as unicode-escape).</summary>
        private static int LexString(string src, int i, List<Token> tokens, Loc loc)
        {
            char quote = src[i];
            var sb = new StringBuilder();
            int j = i + 1;
            while (true)
            {
                if (j >= src.Length) throw Error(loc, "string literal is not closed");
                char c = src[j];
                if (c == quote) break;
                if (c != '\\' || j + 1 >= src.Length)
                {
                    sb.Append(c);
                    j++;
                    continue;
                }
                char e = src[j + 1];
                j += 2;
                switch (e)
                {
                    case '\n': break; // a backslash at the end of a line continues the literal
                    case '\\': sb.Append('\\'); break;
                    case '\'': sb.Append('\''); break;
                    case '"': sb.Append('"'); break;
                    case 'a': sb.Append('\a'); break;
                    case 'b': sb.Append('\b'); break;
                    case 'f': sb.Append('\f'); break;
                    case 'n': sb.Append('\n'); break;
                    case 'r': sb.Append('\r'); break;
                    case 't': sb.Append('\t'); break;
                    case 'v': sb.Append('\v'); break;
                    case 'x': sb.Append(Hex(src, ref j, 2, loc)); break;
                    case 'u': sb.Append(Hex(src, ref j, 4, loc)); break;
                    case 'U': sb.Append(Hex(src, ref j, 8, loc)); break;
                    case >= '0' and <= '7':
                        int value = e - '0';
                        for (int n = 0; n < 2 && j < src.Length && src[j] is >= '0' and <= '7'; n++, j++) value = value * 8 + (src[j] - '0');
                        sb.Append((char)value);
                        break;
                    default: sb.Append('\\').Append(e); break; // Python keeps unknown escapes as written
                }
            }
            tokens.Add(new Token(Tk.String, src[i..(j + 1)], loc, sb.ToString()));
            return j + 1;
        }

        private static string Hex(string src, ref int j, int digits, Loc loc)
        {
            if (j + digits > src.Length || !int.TryParse(src.AsSpan(j, digits), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out int cp)
                || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF && digits == 8))
                throw Error(loc, $"bad \\{(digits == 2 ? 'x' : digits == 4 ? 'u' : 'U')} escape in a string literal");
            j += digits;
            return cp < 0x10000 ? ((char)cp).ToString() : char.ConvertFromUtf32(cp);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Parser: statements and expressions, with jinja2's operator precedence.

    private static readonly HashSet<string> FilterNames =
    [
        "abs", "capitalize", "count", "d", "default", "dict", "first", "float", "int", "items", "join", "last", "length",
        "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "safe", "select",
        "selectattr", "string", "sum", "title", "tojson", "trim", "unique", "upper",
    ];

    private static readonly HashSet<string> TestNames =
    [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "even", "false", "float", "ge", "greaterthan", "gt",
        "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas",
        "sequence", "string", "true", "undefined", "upper",
    ];

    /// <summary>Tests that take an argument, which may follow without parentheses ("x is divisibleby 3").</summary>
    private static readonly HashSet<string> TestsWithArgument =
        ["divisibleby", "eq", "equalto", "ge", "greaterthan", "gt", "in", "le", "lessthan", "lt", "ne", "sameas"];

    private sealed class Parser(List<Token> tokens)
    {
        private int p;
        private int loopDepth;

        private Token Peek => tokens[p];
        private Token PeekAt(int k) => tokens[Math.Min(p + k, tokens.Count - 1)];

        private Token Next()
        {
            var t = tokens[p];
            if (t.Kind != Tk.Eof) p++;
            return t;
        }

        private Token Expect(Tk kind, string what)
        {
            var t = Peek;
            if (t.Kind != kind) throw Error(t.At, $"expected {what}, found {t.Describe()}");
            return Next();
        }

        private void ExpectOp(string op)
        {
            if (!Peek.Is(op)) throw Error(Peek.At, $"expected '{op}', found {Peek.Describe()}");
            p++;
        }

        private void ExpectBlockEnd(string tag) => Expect(Tk.BlockEnd, $"'%}}' to end the '{tag}' tag");

        public List<Node> ParseTemplate() => ParseBody([], null).Nodes;

        /// <summary>Nodes up to one of the <paramref name="stops"/> tags, whose name it consumes and returns.</summary>
        private (List<Node> Nodes, Token? Stop) ParseBody(string[] stops, Token? opener)
        {
            var nodes = new List<Node>();
            while (true)
            {
                var t = Peek;
                switch (t.Kind)
                {
                    case Tk.Eof:
                        if (opener != null)
                            throw Error(opener.At, $"'{opener.Text}' is not closed: expected {string.Join(" or ", stops.Select(s => $"'{{% {s} %}}'"))} before the end of the template");
                        return (nodes, null);
                    case Tk.Data:
                        p++;
                        nodes.Add(new TextNode(t.Text));
                        break;
                    case Tk.VarBegin:
                        p++;
                        nodes.Add(new OutputNode(ParseTuple()));
                        Expect(Tk.VarEnd, "'}}' to end the expression");
                        break;
                    case Tk.BlockBegin:
                        var name = PeekAt(1);
                        if (name.Kind != Tk.Name) throw Error(name.At, $"expected a tag name after '{{%', found {name.Describe()}");
                        p += 2;
                        if (stops.Contains(name.Text)) return (nodes, name);
                        nodes.Add(ParseStatement(name));
                        break;
                    default:
                        throw Error(t.At, $"unexpected {t.Describe()}");
                }
            }
        }

        private Node ParseStatement(Token name)
        {
            switch (name.Text)
            {
                case "for": return ParseFor(name);
                case "if": return ParseIf(name);
                case "set": return ParseSet(name);
                case "macro": return ParseMacro(name);
                case "break" or "continue":
                    if (loopDepth == 0) throw Error(name.At, $"'{name.Text}' outside a for loop");
                    ExpectBlockEnd(name.Text);
                    return new LoopControlNode(name.Text == "break" ? Flow.Break : Flow.Continue);
                case "generation":
                    // transformers' {% generation %} marks assistant text for masks; for rendering it is transparent.
                    ExpectBlockEnd(name.Text);
                    var (inner, _) = ParseBody(["endgeneration"], name);
                    ExpectBlockEnd("endgeneration");
                    return new SequenceNode(inner);
                case "endfor" or "endif" or "elif" or "else" or "endset" or "endmacro" or "endgeneration":
                    throw Error(name.At, $"unexpected '{{% {name.Text} %}}' with no open block it could close");
                default:
                    throw Error(name.At, $"unknown or unsupported tag '{name.Text}'");
            }
        }

        private Node ParseFor(Token tag)
        {
            var targets = new List<string> { Expect(Tk.Name, "a loop variable name").Text };
            while (Peek.Is(","))
            {
                p++;
                targets.Add(Expect(Tk.Name, "a loop variable name").Text);
            }
            if (!Peek.IsName("in")) throw Error(Peek.At, $"expected 'in' in the for loop, found {Peek.Describe()}");
            p++;
            // No ternary here: a trailing "if" filters the loop's items.
            var iterable = ParseTuple(withCondition: false);
            Expr? filter = null;
            if (Peek.IsName("if"))
            {
                p++;
                filter = ParseExpression();
            }
            if (Peek.IsName("recursive")) throw Error(Peek.At, "recursive loops are not supported");
            ExpectBlockEnd("for");
            loopDepth++;
            var (loopBody, stop) = ParseBody(["endfor", "else"], tag);
            loopDepth--;
            List<Node>? elseBody = null;
            if (stop!.Text == "else")
            {
                ExpectBlockEnd("else");
                (elseBody, _) = ParseBody(["endfor"], tag);
            }
            ExpectBlockEnd("endfor");
            return new ForNode(targets, iterable, filter, loopBody, elseBody, tag.At);
        }

        private Node ParseIf(Token tag)
        {
            var branches = new List<(Expr? Condition, List<Node> Body)>();
            Expr? condition = ParseExpression();
            ExpectBlockEnd("if");
            while (true)
            {
                var (branch, stop) = ParseBody(["elif", "else", "endif"], tag);
                branches.Add((condition, branch));
                if (stop!.Text == "elif")
                {
                    condition = ParseExpression();
                    ExpectBlockEnd("elif");
                    continue;
                }
                if (stop.Text == "else")
                {
                    ExpectBlockEnd("else");
                    var (elseBranch, _) = ParseBody(["endif"], tag);
                    branches.Add((null, elseBranch));
                }
                ExpectBlockEnd("endif");
                return new IfNode(branches);
            }
        }

        private Node ParseSet(Token tag)
        {
            var first = Expect(Tk.Name, "a variable name after 'set'");
            if (Peek.Is("."))
            {
                p++;
                var attribute = Expect(Tk.Name, "an attribute name");
                ExpectOp("=");
                var value = ParseTuple();
                ExpectBlockEnd("set");
                return new SetAttributeNode(first.Text, attribute.Text, value, first.At);
            }
            var names = new List<string> { first.Text };
            while (Peek.Is(","))
            {
                p++;
                names.Add(Expect(Tk.Name, "a variable name").Text);
            }
            if (Peek.Is("="))
            {
                p++;
                var value = ParseTuple();
                ExpectBlockEnd("set");
                return new SetNode(names, value, first.At);
            }
            if (names.Count == 1 && Peek.Kind == Tk.BlockEnd)
            {
                p++;
                var (inner, _) = ParseBody(["endset"], tag);
                ExpectBlockEnd("endset");
                return new SetBlockNode(first.Text, inner);
            }
            throw Error(Peek.At, $"expected '=' in 'set', found {Peek.Describe()}");
        }

        private Node ParseMacro(Token tag)
        {
            var name = Expect(Tk.Name, "a macro name");
            ExpectOp("(");
            var parameters = new List<(string Name, Expr? Default)>();
            while (!Peek.Is(")"))
            {
                string parameter = Expect(Tk.Name, "a parameter name").Text;
                Expr? fallback = null;
                if (Peek.Is("="))
                {
                    p++;
                    fallback = ParseExpression();
                }
                parameters.Add((parameter, fallback));
                if (!Peek.Is(",")) break;
                p++;
            }
            ExpectOp(")");
            ExpectBlockEnd("macro");
            int outerLoops = loopDepth;
            loopDepth = 0; // a macro body is not inside the caller's loop
            var (inner, _) = ParseBody(["endmacro"], tag);
            loopDepth = outerLoops;
            ExpectBlockEnd("endmacro");
            return new MacroNode(name.Text, parameters, inner);
        }

        // Expressions, loosest binding first, as jinja2's parser: ternary, or, and, not, comparisons, + -, ~, * / // %,
        // **, unary - +, then primaries with their postfixes (. [] ()) and filters / tests.

        private Expr ParseTuple(bool withCondition = true)
        {
            var at = Peek.At;
            var first = withCondition ? ParseExpression() : ParseOr();
            if (!Peek.Is(",")) return first;
            var items = new List<Expr> { first };
            while (Peek.Is(","))
            {
                p++;
                if (Peek.Kind is Tk.VarEnd or Tk.BlockEnd || Peek.Is(")") || (!withCondition && Peek.IsName("if"))) break;
                items.Add(withCondition ? ParseExpression() : ParseOr());
            }
            return new TupleExpr(items, at);
        }

        private Expr ParseExpression()
        {
            var expr = ParseOr();
            while (Peek.IsName("if"))
            {
                var at = Next().At;
                var condition = ParseOr();
                Expr? otherwise = null;
                if (Peek.IsName("else"))
                {
                    p++;
                    otherwise = ParseExpression();
                }
                expr = new ConditionalExpr(condition, expr, otherwise, at);
            }
            return expr;
        }

        private Expr ParseOr()
        {
            var left = ParseAnd();
            while (Peek.IsName("or"))
            {
                var at = Next().At;
                left = new BinaryExpr("or", left, ParseAnd(), at);
            }
            return left;
        }

        private Expr ParseAnd()
        {
            var left = ParseNot();
            while (Peek.IsName("and"))
            {
                var at = Next().At;
                left = new BinaryExpr("and", left, ParseNot(), at);
            }
            return left;
        }

        private Expr ParseNot()
        {
            if (!Peek.IsName("not")) return ParseCompare();
            var at = Next().At;
            return new NotExpr(ParseNot(), at);
        }

        private Expr ParseCompare()
        {
            var at = Peek.At;
            var first = ParseMath1();
            var rest = new List<(string Op, Expr Right)>();
            while (true)
            {
                var t = Peek;
                if (t.Kind == Tk.Op && t.Text is "==" or "!=" or "<" or "<=" or ">" or ">=")
                {
                    p++;
                    rest.Add((t.Text, ParseMath1()));
                }
                else if (t.IsName("in"))
                {
                    p++;
                    rest.Add(("in", ParseMath1()));
                }
                else if (t.IsName("not") && PeekAt(1).IsName("in"))
                {
                    p += 2;
                    rest.Add(("not in", ParseMath1()));
                }
                else break;
            }
            return rest.Count == 0 ? first : new CompareExpr(first, rest, at);
        }

        private Expr ParseMath1()
        {
            var left = ParseConcat();
            while (Peek.Is("+") || Peek.Is("-"))
            {
                var t = Next();
                left = new BinaryExpr(t.Text, left, ParseConcat(), t.At);
            }
            return left;
        }

        private Expr ParseConcat()
        {
            var left = ParseMath2();
            while (Peek.Is("~"))
            {
                var t = Next();
                left = new BinaryExpr("~", left, ParseMath2(), t.At);
            }
            return left;
        }

        private Expr ParseMath2()
        {
            var left = ParsePow();
            while (Peek.Is("*") || Peek.Is("/") || Peek.Is("//") || Peek.Is("%"))
            {
                var t = Next();
                left = new BinaryExpr(t.Text, left, ParsePow(), t.At);
            }
            return left;
        }

        private Expr ParsePow()
        {
            var left = ParseUnary();
            while (Peek.Is("**"))
            {
                var t = Next();
                left = new BinaryExpr("**", left, ParseUnary(), t.At);
            }
            return left;
        }

        private Expr ParseUnary(bool withFilters = true)
        {
            Expr node;
            if (Peek.Is("-") || Peek.Is("+"))
            {
                var t = Next();
                node = new UnaryExpr(t.Text, ParseUnary(withFilters: false), t.At);
            }
            else node = ParsePrimary();
            node = ParsePostfix(node);
            return withFilters ? ParseFiltersAndTests(node) : node;
        }

        private Expr ParsePrimary()
        {
            var t = Next();
            switch (t.Kind)
            {
                case Tk.Name:
                    return t.Text switch
                    {
                        "true" or "True" => new ConstExpr(true, t.At),
                        "false" or "False" => new ConstExpr(false, t.At),
                        "none" or "None" => new ConstExpr(null, t.At),
                        _ => new NameExpr(t.Text, t.At),
                    };
                case Tk.String:
                    // Adjacent literals join, as in Python.
                    var text = new StringBuilder((string)t.Value!);
                    while (Peek.Kind == Tk.String) text.Append((string)Next().Value!);
                    return new ConstExpr(text.ToString(), t.At);
                case Tk.Int or Tk.Float:
                    return new ConstExpr(t.Value, t.At);
                case Tk.Op when t.Text == "(":
                    if (Peek.Is(")"))
                    {
                        p++;
                        return new TupleExpr([], t.At);
                    }
                    var inner = ParseTuple();
                    ExpectOp(")");
                    return inner;
                case Tk.Op when t.Text == "[":
                    var items = new List<Expr>();
                    while (!Peek.Is("]"))
                    {
                        items.Add(ParseExpression());
                        if (!Peek.Is(",")) break;
                        p++;
                    }
                    ExpectOp("]");
                    return new ListExpr(items, t.At);
                case Tk.Op when t.Text == "{":
                    var entries = new List<(Expr Key, Expr Value)>();
                    while (!Peek.Is("}"))
                    {
                        var key = ParseExpression();
                        ExpectOp(":");
                        entries.Add((key, ParseExpression()));
                        if (!Peek.Is(",")) break;
                        p++;
                    }
                    ExpectOp("}");
                    return new DictExpr(entries, t.At);
                default:
                    throw Error(t.At, $"unexpected {t.Describe()} in an expression");
            }
        }

        private Expr ParsePostfix(Expr node)
        {
            while (true)
            {
                var t = Peek;
                if (t.Is("."))
                {
                    p++;
                    var member = Next();
                    node = member.Kind switch
                    {
                        Tk.Name => new AttributeExpr(node, member.Text, member.At),
                        Tk.Int => new ItemExpr(node, new ConstExpr(member.Value, member.At), member.At),
                        _ => throw Error(member.At, $"expected an attribute name after '.', found {member.Describe()}"),
                    };
                }
                else if (t.Is("["))
                {
                    p++;
                    node = ParseSubscript(node, t.At);
                }
                else if (t.Is("("))
                {
                    var (args, kwargs) = ParseArguments();
                    node = new CallExpr(node, args, kwargs, t.At);
                }
                else return node;
            }
        }

        private Expr ParseSubscript(Expr node, Loc at)
        {
            Expr? start = null, stop = null, step = null;
            bool slice = false;
            if (!Peek.Is(":")) start = ParseExpression();
            if (Peek.Is(":"))
            {
                slice = true;
                p++;
                if (!Peek.Is("]") && !Peek.Is(":")) stop = ParseExpression();
                if (Peek.Is(":"))
                {
                    p++;
                    if (!Peek.Is("]")) step = ParseExpression();
                }
            }
            ExpectOp("]");
            return slice ? new SliceExpr(node, start, stop, step, at) : new ItemExpr(node, start!, at);
        }

        private Expr ParseFiltersAndTests(Expr node)
        {
            while (true)
            {
                var t = Peek;
                if (t.Is("|"))
                {
                    p++;
                    // An unknown filter or test fails when evaluated, not here: jinja2 (3.0 on) lets a template name one in a
                    // branch it does not take, and a checkpoint's template may use one outside this subset in a branch
                    // (tools, say) that plain conversations never reach.
                    var name = Expect(Tk.Name, "a filter name after '|'");
                    List<Expr> args = [];
                    List<(string, Expr)> kwargs = [];
                    if (Peek.Is("(")) (args, kwargs) = ParseArguments();
                    node = new FilterExpr(node, name.Text, args, kwargs, name.At);
                }
                else if (t.IsName("is"))
                {
                    p++;
                    bool negated = false;
                    if (Peek.IsName("not"))
                    {
                        p++;
                        negated = true;
                    }
                    var name = Expect(Tk.Name, "a test name after 'is'");
                    List<Expr> args = [];
                    if (Peek.Is("(")) args = ParseArguments().Args;
                    else if (TestsWithArgument.Contains(name.Text)
                        && (Peek.Kind is Tk.Name or Tk.String or Tk.Int or Tk.Float || Peek.Is("(") || Peek.Is("[") || Peek.Is("{"))
                        && !(Peek.IsName("else") || Peek.IsName("or") || Peek.IsName("and") || Peek.IsName("if")))
                        args = [ParseUnary(withFilters: false)];
                    node = new TestExpr(node, name.Text, args, negated, name.At);
                }
                else if (t.Is("("))
                {
                    var (args, kwargs) = ParseArguments();
                    node = new CallExpr(node, args, kwargs, t.At);
                }
                else return node;
            }
        }

        private (List<Expr> Args, List<(string Name, Expr Value)> Kwargs) ParseArguments()
        {
            ExpectOp("(");
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            while (!Peek.Is(")"))
            {
                if (Peek.Kind == Tk.Name && PeekAt(1).Is("="))
                {
                    string name = Next().Text;
                    p++;
                    kwargs.Add((name, ParseExpression()));
                }
                else
                {
                    if (kwargs.Count > 0) throw Error(Peek.At, "a positional argument after a keyword argument");
                    args.Add(ParseExpression());
                }
                if (!Peek.Is(",")) break;
                p++;
            }
            ExpectOp(")");
            return (args, kwargs);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Runtime values. Strings, bools, longs, doubles and null stand for themselves; lists are IReadOnlyList<object?>
    // (PyTuple for tuples), dicts IReadOnlyDictionary<string, object?> in insertion order, as Python's.

    /// <summary>jinja2's default Undefined: prints as "", iterates as empty, is falsy; most other uses fail with its hint.</summary>
    private sealed class Undefined(string hint)
    {
        public string Hint => hint;
    }

    private sealed class PyTuple(object?[] items) : IReadOnlyList<object?>
    {
        public object? this[int index] => items[index];
        public int Count => items.Length;
        public IEnumerator<object?> GetEnumerator() => ((IEnumerable<object?>)items).GetEnumerator();
        IEnumerator IEnumerable.GetEnumerator() => items.GetEnumerator();
    }

    /// <summary>namespace(...): the one mutable object, so that a loop body can carry a value out of the loop.</summary>
    private sealed class Namespace
    {
        public readonly Dictionary<string, object?> Attributes = new(StringComparer.Ordinal);
    }

    private delegate object? Function(Loc at, List<object?> args, Dictionary<string, object?> kwargs);

    private sealed class Callable(string name, Function function)
    {
        public string Name => name;
        public object? Invoke(Loc at, List<object?> args, Dictionary<string, object?> kwargs) => function(at, args, kwargs);
    }

    private sealed class LoopInfo(IReadOnlyList<object?> items, int index0)
    {
        public object? Get(string name, Loc at) => name switch
        {
            "index" => (long)index0 + 1,
            "index0" => (long)index0,
            "revindex" => (long)(items.Count - index0),
            "revindex0" => (long)(items.Count - index0 - 1),
            "first" => index0 == 0,
            "last" => index0 == items.Count - 1,
            "length" => (long)items.Count,
            "depth" => 1L,
            "depth0" => 0L,
            "previtem" => index0 > 0 ? items[index0 - 1] : new Undefined("there is no previous item"),
            "nextitem" => index0 + 1 < items.Count ? items[index0 + 1] : new Undefined("there is no next item"),
            "cycle" => new Callable("loop.cycle", (a, args, _) =>
                args.Count > 0 ? args[index0 % args.Count] : throw Error(a, "loop.cycle() needs at least one value")),
            _ => new Undefined($"'loop' has no attribute '{name}'"),
        };
    }

    private sealed class Scope(Scope? parent)
    {
        private readonly Scope? parent = parent;
        public readonly Dictionary<string, object?> Vars = new(StringComparer.Ordinal);

        public object? Lookup(string name)
        {
            for (var s = this; s != null; s = s.parent)
                if (s.Vars.TryGetValue(name, out var value)) return value;
            return new Undefined($"'{name}' is undefined");
        }
    }

    private static object? Import(object? value, string path) => value switch
    {
        null or string or bool or long or double => value,
        int or short or sbyte or byte or ushort or uint => Convert.ToInt64(value, CultureInfo.InvariantCulture),
        float f => (double)f,
        decimal m => (double)m,
        JsonElement e => ImportJson(e),
        IReadOnlyDictionary<string, object?> d => ImportDict(d.Select(kv => (kv.Key, (object?)kv.Value)), path),
        IDictionary d => ImportDict(d.Cast<DictionaryEntry>().Select(kv =>
            (kv.Key as string ?? throw new XrayVLException($"Template variable '{path}' has a key that is not a string."), kv.Value)), path),
        IEnumerable list => list.Cast<object?>().Select((item, i) => Import(item, $"{path}[{i}]")).ToList(),
        _ => throw new XrayVLException($"Template variable '{path}' is a {value.GetType().Name}: use strings, bools, numbers, null, lists and string-keyed dictionaries."),
    };

    private static Dictionary<string, object?> ImportDict(IEnumerable<(string Key, object? Value)> entries, string path)
    {
        var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (key, value) in entries) dict[key] = Import(value, $"{path}.{key}");
        return dict;
    }

    private static object? ImportJson(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        JsonValueKind.Number => e.TryGetInt64(out long l) ? l : (object)e.GetDouble(),
        JsonValueKind.Array => e.EnumerateArray().Select(ImportJson).ToList(),
        _ => e.EnumerateObject().Aggregate(new Dictionary<string, object?>(StringComparer.Ordinal), (d, p) =>
        {
            d[p.Name] = ImportJson(p.Value);
            return d;
        }),
    };

    private static readonly (string Name, Callable Function)[] Globals =
    [
        ("raise_exception", new Callable("raise_exception", (_, args, kwargs) =>
            throw new XrayVLException(Str(Arg(args, kwargs, 0, "message", "")!)))),
        ("range", new Callable("range", (at, args, _) =>
        {
            if (args.Count is < 1 or > 3) throw Error(at, "range() takes 1 to 3 arguments");
            long start = args.Count == 1 ? 0 : ToInt(args[0], at), stop = ToInt(args[args.Count == 1 ? 0 : 1], at);
            long step = args.Count == 3 ? ToInt(args[2], at) : 1;
            if (step == 0) throw Error(at, "range() step must not be zero");
            var list = new List<object?>();
            for (long i = start; step > 0 ? i < stop : i > stop; i += step)
            {
                if (list.Count >= 1_000_000) throw Error(at, "range() longer than 1000000 items");
                list.Add(i);
            }
            return list;
        })),
        ("namespace", new Callable("namespace", (at, args, kwargs) =>
        {
            var ns = new Namespace();
            foreach (var arg in args)
            {
                if (arg is not IReadOnlyDictionary<string, object?> d) throw Error(at, "namespace() takes keyword arguments or a dict");
                foreach (var (k, v) in d) ns.Attributes[k] = v;
            }
            foreach (var (k, v) in kwargs) ns.Attributes[k] = v;
            return ns;
        })),
        ("dict", new Callable("dict", (_, _, kwargs) => new Dictionary<string, object?>(kwargs, StringComparer.Ordinal))),
    ];

    // ---------------------------------------------------------------------------------------------------------------
    // Statements

    private enum Flow { Normal, Break, Continue }

    private abstract class Node
    {
        public abstract Flow Render(Scope scope, StringBuilder output);
    }

    private static Flow RenderNodes(List<Node> nodes, Scope scope, StringBuilder output)
    {
        foreach (var node in nodes)
        {
            var flow = node.Render(scope, output);
            if (flow != Flow.Normal) return flow;
        }
        return Flow.Normal;
    }

    private sealed class TextNode(string text) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            output.Append(text);
            return Flow.Normal;
        }
    }

    private sealed class OutputNode(Expr value) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            output.Append(Str(value.Eval(scope)));
            return Flow.Normal;
        }
    }

    private sealed class SequenceNode(List<Node> body) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output) => RenderNodes(body, scope, output);
    }

    private sealed class LoopControlNode(Flow flow) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output) => flow;
    }

    private sealed class IfNode(List<(Expr? Condition, List<Node> Body)> branches) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            foreach (var (condition, branch) in branches)
                if (condition == null || IsTrue(condition.Eval(scope))) return RenderNodes(branch, scope, output);
            return Flow.Normal;
        }
    }

    private sealed class ForNode(List<string> targets, Expr iterable, Expr? filter, List<Node> body, List<Node>? elseBody, Loc at) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            var source = Iterate(iterable.Eval(scope), at);
            // A loop has its own scope: a plain "set" inside it does not leak out (namespace objects exist for that).
            var loopScope = new Scope(scope);
            var items = source;
            if (filter != null)
            {
                // The inline "if" filters before the loop starts, so loop.index / loop.length count only kept items.
                var kept = new List<object?>();
                foreach (var item in source)
                {
                    Bind(loopScope, targets, item, at);
                    if (IsTrue(filter.Eval(loopScope))) kept.Add(item);
                }
                items = kept;
            }
            if (items.Count == 0)
                return elseBody == null ? Flow.Normal : RenderNodes(elseBody, new Scope(scope), output);
            for (int i = 0; i < items.Count; i++)
            {
                Bind(loopScope, targets, items[i], at);
                loopScope.Vars["loop"] = new LoopInfo(items, i);
                if (RenderNodes(body, loopScope, output) == Flow.Break) break;
            }
            return Flow.Normal;
        }
    }

    private static void Bind(Scope scope, List<string> names, object? value, Loc at)
    {
        if (names.Count == 1)
        {
            scope.Vars[names[0]] = value;
            return;
        }
        var parts = value is string ? null : value as IReadOnlyList<object?>;
        if (parts == null || parts.Count != names.Count)
            throw Error(at, $"cannot unpack {TypeName(value)} into {names.Count} names ({string.Join(", ", names)})");
        for (int i = 0; i < names.Count; i++) scope.Vars[names[i]] = parts[i];
    }

    private sealed class SetNode(List<string> names, Expr value, Loc at) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            Bind(scope, names, value.Eval(scope), at);
            return Flow.Normal;
        }
    }

    private sealed class SetAttributeNode(string name, string attribute, Expr value, Loc at) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            if (scope.Lookup(name) is not Namespace ns)
                throw Error(at, $"cannot set attribute '{attribute}' of '{name}': only a namespace() takes attributes");
            ns.Attributes[attribute] = value.Eval(scope);
            return Flow.Normal;
        }
    }

    private sealed class SetBlockNode(string name, List<Node> body) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            var captured = new StringBuilder();
            RenderNodes(body, scope, captured);
            scope.Vars[name] = captured.ToString();
            return Flow.Normal;
        }
    }

    private sealed class MacroNode(string name, List<(string Name, Expr? Default)> parameters, List<Node> body) : Node
    {
        public override Flow Render(Scope scope, StringBuilder output)
        {
            scope.Vars[name] = new Callable(name, (at, args, kwargs) =>
            {
                if (args.Count > parameters.Count) throw Error(at, $"macro '{name}' takes {parameters.Count} arguments, got {args.Count}");
                var local = new Scope(scope);
                for (int i = 0; i < parameters.Count; i++)
                {
                    var (parameter, fallback) = parameters[i];
                    local.Vars[parameter] = i < args.Count ? args[i]
                        : kwargs.TryGetValue(parameter, out var v) ? v
                        : fallback != null ? fallback.Eval(local)
                        : new Undefined($"'{parameter}' is undefined (macro '{name}' was called without it)");
                }
                foreach (var key in kwargs.Keys)
                    if (!parameters.Any(q => q.Name == key)) throw Error(at, $"macro '{name}' has no parameter '{key}'");
                var text = new StringBuilder();
                RenderNodes(body, local, text);
                return text.ToString();
            });
            return Flow.Normal;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Expressions

    private abstract class Expr(Loc at)
    {
        public Loc At => at;
        public abstract object? Eval(Scope scope);
    }

    private sealed class ConstExpr(object? value, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => value;
    }

    private sealed class NameExpr(string name, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => scope.Lookup(name);
    }

    private sealed class ListExpr(List<Expr> items, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => items.Select(i => i.Eval(scope)).ToList();
    }

    private sealed class TupleExpr(List<Expr> items, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => new PyTuple([.. items.Select(i => i.Eval(scope))]);
    }

    private sealed class DictExpr(List<(Expr Key, Expr Value)> entries, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            var dict = new Dictionary<string, object?>(StringComparer.Ordinal);
            foreach (var (key, value) in entries)
            {
                if (key.Eval(scope) is not string k) throw Error(key.At, "dict keys must be strings here");
                dict[k] = value.Eval(scope);
            }
            return dict;
        }
    }

    private sealed class AttributeExpr(Expr target, string name, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => GetAttribute(target.Eval(scope), name, At);
    }

    private sealed class ItemExpr(Expr target, Expr key, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => GetItem(target.Eval(scope), key.Eval(scope), At);
    }

    private sealed class SliceExpr(Expr target, Expr? start, Expr? stop, Expr? step, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            var value = target.Eval(scope);
            long? Bound(Expr? e) => e?.Eval(scope) is { } v and not Undefined ? ToInt(v, At) : null;
            return Slice(value, Bound(start), Bound(stop), Bound(step), At);
        }
    }

    private sealed class CallExpr(Expr function, List<Expr> args, List<(string Name, Expr Value)> kwargs, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            var f = function.Eval(scope);
            if (f is Undefined u) throw Error(At, u.Hint);
            if (f is not Callable callable) throw Error(At, $"a {TypeName(f)} is not callable");
            return callable.Invoke(At, [.. args.Select(a => a.Eval(scope))], EvalKwargs(kwargs, scope));
        }
    }

    private static Dictionary<string, object?> EvalKwargs(List<(string Name, Expr Value)> kwargs, Scope scope)
    {
        var result = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (var (name, value) in kwargs) result[name] = value.Eval(scope);
        return result;
    }

    private sealed class FilterExpr(Expr value, string name, List<Expr> args, List<(string Name, Expr Value)> kwargs, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) =>
            ApplyFilter(name, value.Eval(scope), [.. args.Select(a => a.Eval(scope))], EvalKwargs(kwargs, scope), At);
    }

    private sealed class TestExpr(Expr value, string name, List<Expr> args, bool negated, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => ApplyTest(name, value.Eval(scope), [.. args.Select(a => a.Eval(scope))], At) != negated;
    }

    private sealed class NotExpr(Expr operand, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) => !IsTrue(operand.Eval(scope));
    }

    private sealed class UnaryExpr(string op, Expr operand, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            var v = operand.Eval(scope);
            if (v is Undefined u) throw Error(At, u.Hint);
            return v switch
            {
                bool b => (object)(op == "-" ? -(b ? 1L : 0L) : (b ? 1L : 0L)),
                long l => (object)(op == "-" ? checked(-l) : l),
                double d => (object)(op == "-" ? -d : d),
                _ => throw Error(At, $"bad operand type for unary {op}: '{TypeName(v)}'"),
            };
        }
    }

    private sealed class ConditionalExpr(Expr condition, Expr then, Expr? otherwise, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope) =>
            IsTrue(condition.Eval(scope)) ? then.Eval(scope)
            : otherwise != null ? otherwise.Eval(scope)
            : new Undefined("the condition of an 'if' expression without 'else' was false");
    }

    private sealed class BinaryExpr(string op, Expr left, Expr right, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            var l = left.Eval(scope);
            // "and" / "or" return an operand, as in Python, and only evaluate the right one when needed.
            if (op == "and") return IsTrue(l) ? right.Eval(scope) : l;
            if (op == "or") return IsTrue(l) ? l : right.Eval(scope);
            var r = right.Eval(scope);
            return op == "~" ? Str(l) + Str(r) : Arithmetic(op, l, r, At);
        }
    }

    private sealed class CompareExpr(Expr first, List<(string Op, Expr Right)> rest, Loc at) : Expr(at)
    {
        public override object? Eval(Scope scope)
        {
            // Chained like Python: a < b < c is a < b and b < c.
            var left = first.Eval(scope);
            foreach (var (op, rightExpr) in rest)
            {
                var right = rightExpr.Eval(scope);
                bool holds = op switch
                {
                    "==" => PyEquals(left, right),
                    "!=" => !PyEquals(left, right),
                    "in" => Contains(right, left, At),
                    "not in" => !Contains(right, left, At),
                    _ => CompareOrder(op, left, right, At),
                };
                if (!holds) return false;
                left = right;
            }
            return true;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Python semantics of values

    private static string TypeName(object? v) => v switch
    {
        null => "NoneType",
        string => "str",
        bool => "bool",
        long => "int",
        double => "float",
        PyTuple => "tuple",
        IReadOnlyList<object?> => "list",
        IReadOnlyDictionary<string, object?> => "dict",
        Undefined => "Undefined",
        Namespace => "Namespace",
        Callable => "function",
        LoopInfo => "LoopContext",
        _ => v.GetType().Name,
    };

    private static bool IsTrue(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        long l => l != 0,
        double d => d != 0,
        string s => s.Length > 0,
        IReadOnlyList<object?> list => list.Count > 0,
        IReadOnlyDictionary<string, object?> dict => dict.Count > 0,
        _ => true,
    };

    /// <summary>Python's str(): what "{{ value }}" prints.</summary>
    private static string Str(object? v) => v switch
    {
        string s => s,
        Undefined => "",
        _ => Repr(v),
    };

    /// <summary>Python's repr(), as values print inside lists and dicts.</summary>
    private static string Repr(object? v)
    {
        switch (v)
        {
            case null: return "None";
            case bool b: return b ? "True" : "False";
            case long l: return l.ToString(CultureInfo.InvariantCulture);
            case double d: return PyFloat(d);
            case string s: return QuoteRepr(s);
            case Undefined: return "Undefined";
            case PyTuple t: return "(" + string.Join(", ", t.Select(Repr)) + (t.Count == 1 ? ",)" : ")");
            case IReadOnlyList<object?> list: return "[" + string.Join(", ", list.Select(Repr)) + "]";
            case IReadOnlyDictionary<string, object?> dict: return "{" + string.Join(", ", dict.Select(kv => QuoteRepr(kv.Key) + ": " + Repr(kv.Value))) + "}";
            case Namespace ns: return "<Namespace " + Repr(ns.Attributes) + ">";
            case Callable c: return $"<function {c.Name}>";
            default: return v.ToString() ?? "";
        }
    }

    private static string QuoteRepr(string s)
    {
        char quote = s.Contains('\'') && !s.Contains('"') ? '"' : '\'';
        var sb = new StringBuilder().Append(quote);
        foreach (char c in s)
        {
            if (c == quote || c == '\\') sb.Append('\\').Append(c);
            else if (c == '\n') sb.Append("\\n");
            else if (c == '\r') sb.Append("\\r");
            else if (c == '\t') sb.Append("\\t");
            else if (c < 0x20 || c == 0x7f) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append(c);
        }
        return sb.Append(quote).ToString();
    }

    /// <summary>Python's repr of a float: shortest round trip, ".0" on whole numbers, exponent form below 1e-4 and from 1e16.</summary>
    private static string PyFloat(double d)
    {
        if (double.IsNaN(d)) return "nan";
        if (double.IsInfinity(d)) return d > 0 ? "inf" : "-inf";
        if (d == Math.Floor(d) && Math.Abs(d) < 1e16) return d.ToString("0.0", CultureInfo.InvariantCulture);
        return d.ToString("R", CultureInfo.InvariantCulture).Replace("E", "e");
    }

    private static bool IsNumber(object? v) => v is long or double or bool;

    private static double ToDouble(object? v) => v switch
    {
        long l => l,
        double d => d,
        bool b => b ? 1 : 0,
        _ => double.NaN,
    };

    private static long ToInt(object? v, Loc at) => v switch
    {
        long l => l,
        bool b => b ? 1 : 0,
        Undefined u => throw Error(at, u.Hint),
        _ => throw Error(at, $"expected an integer, got {TypeName(v)} {Repr(v)}"),
    };

    private static bool PyEquals(object? a, object? b)
    {
        if (a is Undefined || b is Undefined) return a is Undefined && b is Undefined;
        if (IsNumber(a) && IsNumber(b)) return a is double || b is double ? ToDouble(a) == ToDouble(b) : ToLongExact(a) == ToLongExact(b);
        switch (a)
        {
            case null: return b == null;
            case string s: return b is string t && s == t;
            case PyTuple t1: return b is PyTuple t2 && t1.Count == t2.Count && t1.Zip(t2).All(p => PyEquals(p.First, p.Second));
            case IReadOnlyList<object?> l1:
                return b is IReadOnlyList<object?> l2 and not PyTuple && l1.Count == l2.Count && l1.Zip(l2).All(p => PyEquals(p.First, p.Second));
            case IReadOnlyDictionary<string, object?> d1:
                return b is IReadOnlyDictionary<string, object?> d2 && d1.Count == d2.Count
                    && d1.All(kv => d2.TryGetValue(kv.Key, out var v) && PyEquals(kv.Value, v));
            default: return ReferenceEquals(a, b);
        }
    }

    private static long ToLongExact(object? v) => v is bool b ? (b ? 1 : 0) : (long)v!;

    private static bool CompareOrder(string op, object? a, object? b, Loc at)
    {
        int c = Order(a, b, op, at);
        return op switch { "<" => c < 0, "<=" => c <= 0, ">" => c > 0, _ => c >= 0 };
    }

    private static int Order(object? a, object? b, string op, Loc at)
    {
        if (a is Undefined ua) throw Error(at, ua.Hint);
        if (b is Undefined ub) throw Error(at, ub.Hint);
        if (IsNumber(a) && IsNumber(b))
            return a is double || b is double ? ToDouble(a).CompareTo(ToDouble(b)) : ToLongExact(a).CompareTo(ToLongExact(b));
        if (a is string s && b is string t) return Math.Sign(string.CompareOrdinal(s, t));
        if (a is IReadOnlyList<object?> l1 && b is IReadOnlyList<object?> l2 && (a is PyTuple) == (b is PyTuple))
        {
            for (int i = 0; i < Math.Min(l1.Count, l2.Count); i++)
                if (!PyEquals(l1[i], l2[i])) return Order(l1[i], l2[i], op, at);
            return l1.Count.CompareTo(l2.Count);
        }
        throw Error(at, $"'{op}' is not supported between {TypeName(a)} and {TypeName(b)}");
    }

    private static bool Contains(object? container, object? item, Loc at) => container switch
    {
        string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw Error(at, $"'in <string>' needs a string on the left, not {TypeName(item)}"),
        IReadOnlyList<object?> list => list.Any(x => PyEquals(x, item)),
        IReadOnlyDictionary<string, object?> dict => item is string key && dict.ContainsKey(key),
        Undefined => false,
        _ => throw Error(at, $"'in' needs a string, list or dict on the right, not {TypeName(container)}"),
    };

    private static object? Arithmetic(string op, object? a, object? b, Loc at)
    {
        if (a is Undefined ua) throw Error(at, ua.Hint);
        if (b is Undefined ub) throw Error(at, ub.Hint);
        if (IsNumber(a) && IsNumber(b))
        {
            bool integral = a is not double && b is not double;
            if (integral)
            {
                long x = ToLongExact(a), y = ToLongExact(b);
                try
                {
                    switch (op)
                    {
                        case "+": return checked(x + y);
                        case "-": return checked(x - y);
                        case "*": return checked(x * y);
                        case "//":
                            if (y == 0) throw Error(at, "integer division by zero");
                            long q = x / y;
                            return (x % y != 0 && (x < 0) != (y < 0)) ? q - 1 : q; // Python floors toward -infinity
                        case "%":
                            if (y == 0) throw Error(at, "integer modulo by zero");
                            long r = x % y;
                            return r != 0 && (r < 0) != (y < 0) ? r + y : r; // the result takes the divisor's sign
                        case "**" when y >= 0:
                            long result = 1;
                            for (long i = 0; i < y; i++) result = checked(result * x);
                            return result;
                    }
                }
                catch (OverflowException)
                {
                    throw Error(at, $"integer overflow in '{op}'");
                }
            }
            double dx = ToDouble(a), dy = ToDouble(b);
            if (op is "/" or "//" or "%" && dy == 0) throw Error(at, "float division by zero");
            return op switch
            {
                "+" => dx + dy,
                "-" => dx - dy,
                "*" => dx * dy,
                "/" => dx / dy,
                "//" => Math.Floor(dx / dy),
                "%" => dx - dy * Math.Floor(dx / dy),
                _ => Math.Pow(dx, dy),
            };
        }
        if (op == "+")
        {
            if (a is string s && b is string t) return s + t;
            if (a is PyTuple t1 && b is PyTuple t2) return new PyTuple([.. t1, .. t2]);
            if (a is IReadOnlyList<object?> l1 and not PyTuple && b is IReadOnlyList<object?> l2 and not PyTuple) return l1.Concat(l2).ToList();
        }
        if (op == "*")
        {
            if (a is string or IReadOnlyList<object?> && b is long or bool) return Repeat(a, ToLongExact(b), at);
            if (b is string or IReadOnlyList<object?> && a is long or bool) return Repeat(b, ToLongExact(a), at);
        }
        throw Error(at, $"unsupported operand types for {op}: '{TypeName(a)}' and '{TypeName(b)}'");
    }

    private static object Repeat(object? value, long times, Loc at)
    {
        if (times > 1_000_000) throw Error(at, "a repetition longer than 1000000");
        int n = (int)Math.Max(0, times);
        return value is string s ? string.Concat(Enumerable.Repeat(s, n))
            : Enumerable.Repeat((IReadOnlyList<object?>)value!, n).SelectMany(x => x).ToList();
    }

    /// <summary>The code points of a string, each as a string (Python indexes strings by code point).</summary>
    private static List<string> CodePoints(string s)
    {
        var result = new List<string>(s.Length);
        foreach (var rune in s.EnumerateRunes()) result.Add(rune.ToString());
        return result;
    }

    /// <summary>What a for loop walks: a list's items, a dict's keys, a string's characters; nothing for undefined.</summary>
    private static IReadOnlyList<object?> Iterate(object? v, Loc at) => v switch
    {
        string s => CodePoints(s),
        IReadOnlyList<object?> list => list,
        IReadOnlyDictionary<string, object?> dict => dict.Keys.ToList<object?>(),
        Undefined => [],
        _ => throw Error(at, $"a {TypeName(v)} is not iterable"),
    };

    /// <summary>obj.name: a method or attribute first, then the item (jinja2's getattr order).</summary>
    private static object? GetAttribute(object? obj, string name, Loc at)
    {
        switch (obj)
        {
            case Undefined u: throw Error(at, $"{u.Hint} (reading its attribute '{name}')");
            case IReadOnlyDictionary<string, object?> dict:
                return (object?)DictMethod(dict, name) ?? (dict.TryGetValue(name, out var value) ? value : new Undefined($"'dict object' has no attribute '{name}'"));
            case string s: return (object?)StringMethod(s, name) ?? new Undefined($"'str object' has no attribute '{name}'");
            case Namespace ns: return ns.Attributes.TryGetValue(name, out var attr) ? attr : new Undefined($"'namespace' has no attribute '{name}'");
            case LoopInfo loop: return loop.Get(name, at);
            default: return new Undefined($"'{TypeName(obj)} object' has no attribute '{name}'");
        }
    }

    /// <summary>obj[key]: the item first, then for a string key the attribute (jinja2's getitem order).</summary>
    private static object? GetItem(object? obj, object? key, Loc at)
    {
        if (obj is Undefined u) throw Error(at, $"{u.Hint} (reading its item {Repr(key)})");
        if (key is Undefined uk) throw Error(at, uk.Hint);
        switch (obj)
        {
            case IReadOnlyDictionary<string, object?> dict when key is string k:
                return dict.TryGetValue(k, out var value) ? value : (object?)DictMethod(dict, k) ?? new Undefined($"'dict object' has no attribute '{k}'");
            case IReadOnlyList<object?> list when key is long or bool:
                long i = ToLongExact(key);
                if (i < 0) i += list.Count;
                return i >= 0 && i < list.Count ? list[(int)i] : new Undefined($"{TypeName(obj)} index {Repr(key)} out of range");
            case string s when key is long or bool:
                var chars = CodePoints(s);
                long j = ToLongExact(key);
                if (j < 0) j += chars.Count;
                return j >= 0 && j < chars.Count ? chars[(int)j] : new Undefined($"string index {Repr(key)} out of range");
        }
        return key is string name ? GetAttribute(obj, name, at) : new Undefined($"'{TypeName(obj)} object' has no item {Repr(key)}");
    }

    private static object? Slice(object? value, long? start, long? stop, long? step, Loc at)
    {
        if (value is Undefined u) throw Error(at, u.Hint);
        IReadOnlyList<object?> items = value switch
        {
            string s => CodePoints(s),
            IReadOnlyList<object?> list => list,
            _ => throw Error(at, $"a {TypeName(value)} cannot be sliced"),
        };
        long n = items.Count, by = step ?? 1;
        if (by == 0) throw Error(at, "slice step cannot be zero");
        long Clamp(long? bound, long fallback, long low, long high)
        {
            if (bound == null) return fallback;
            long b = bound.Value < 0 ? bound.Value + n : bound.Value;
            return Math.Clamp(b, low, high);
        }
        // Python's slice.indices: bounds clamp into [0, n] going forward and into [-1, n - 1] going backward.
        long from = by > 0 ? Clamp(start, 0, 0, n) : Clamp(start, n - 1, -1, n - 1);
        long to = by > 0 ? Clamp(stop, n, 0, n) : Clamp(stop, -1, -1, n - 1);
        var picked = new List<object?>();
        for (long i = from; by > 0 ? i < to : i > to; i += by) picked.Add(items[(int)i]);
        return value switch
        {
            string => string.Concat(picked.Cast<string>()),
            PyTuple => new PyTuple([.. picked]),
            _ => picked,
        };
    }

    private static object? Arg(List<object?> args, Dictionary<string, object?> kwargs, int index, string name, object? fallback) =>
        index < args.Count ? args[index] : kwargs.TryGetValue(name, out var v) ? v : fallback;

    private static string StrArg(List<object?> args, Dictionary<string, object?> kwargs, int index, string name, string method, Loc at) =>
        Arg(args, kwargs, index, name, null) as string ?? throw Error(at, $"{method}() needs a string argument '{name}'");

    private static Callable Method(string name, Function function) => new(name, function);

    private static Callable? DictMethod(IReadOnlyDictionary<string, object?> dict, string name) => name switch
    {
        "items" => Method(name, (_, _, _) => dict.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList()),
        "keys" => Method(name, (_, _, _) => dict.Keys.ToList<object?>()),
        "values" => Method(name, (_, _, _) => dict.Values.ToList()),
        "get" => Method(name, (at, args, kwargs) =>
            Arg(args, kwargs, 0, "key", null) is string key && dict.TryGetValue(key, out var v) ? v : Arg(args, kwargs, 1, "default", null)),
        _ => null,
    };

    private static string Strip(string s, object? chars, bool left, bool right)
    {
        char[]? set = chars is string c ? c.ToCharArray() : null;
        if (set == null) return left && right ? s.Trim() : left ? s.TrimStart() : s.TrimEnd();
        return left && right ? s.Trim(set) : left ? s.TrimStart(set) : s.TrimEnd(set);
    }

    private static Callable? StringMethod(string s, string name) => name switch
    {
        "strip" or "lstrip" or "rstrip" => Method(name, (_, args, kwargs) =>
            Strip(s, Arg(args, kwargs, 0, "chars", null), name != "rstrip", name != "lstrip")),
        "upper" => Method(name, (_, _, _) => s.ToUpperInvariant()),
        "lower" => Method(name, (_, _, _) => s.ToLowerInvariant()),
        "title" => Method(name, (_, _, _) => PyTitle(s)),
        "capitalize" => Method(name, (_, _, _) => Capitalize(s)),
        "startswith" or "endswith" => Method(name, (at, args, kwargs) =>
        {
            var affix = Arg(args, kwargs, 0, "prefix", null);
            IEnumerable<object?> options = affix is PyTuple t ? t : [affix];
            return options.Any(o => o is string a
                ? (name == "startswith" ? s.StartsWith(a, StringComparison.Ordinal) : s.EndsWith(a, StringComparison.Ordinal))
                : throw Error(at, $"{name}() needs a string or a tuple of strings"));
        }),
        "split" => Method(name, (at, args, kwargs) =>
        {
            var sep = Arg(args, kwargs, 0, "sep", null);
            long max = Arg(args, kwargs, 1, "maxsplit", -1L) is { } m ? ToInt(m, at) : -1;
            return Split(s, sep, max, at);
        }),
        "replace" => Method(name, (at, args, kwargs) =>
            Replace(s, StrArg(args, kwargs, 0, "old", name, at), StrArg(args, kwargs, 1, "new", name, at), Arg(args, kwargs, 2, "count", -1L), at)),
        "find" => Method(name, (at, args, kwargs) => (long)s.IndexOf(StrArg(args, kwargs, 0, "sub", name, at), StringComparison.Ordinal)),
        "count" => Method(name, (at, args, kwargs) =>
        {
            string sub = StrArg(args, kwargs, 0, "sub", name, at);
            if (sub.Length == 0) return (long)CodePoints(s).Count + 1;
            long n = 0;
            for (int i = s.IndexOf(sub, StringComparison.Ordinal); i >= 0; i = s.IndexOf(sub, i + sub.Length, StringComparison.Ordinal)) n++;
            return n;
        }),
        "join" => Method(name, (at, args, kwargs) => string.Join(s, Iterate(Arg(args, kwargs, 0, "iterable", null), at).Select(x =>
            x as string ?? throw Error(at, $"join() needs strings, found {TypeName(x)}")))),
        _ => null,
    };

    private static List<object?> Split(string s, object? sep, long max, Loc at)
    {
        var parts = new List<object?>();
        if (sep == null)
        {
            // No separator: runs of whitespace split, and leading / trailing whitespace yields no empty parts.
            int i = 0;
            while (true)
            {
                while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
                if (i >= s.Length) break;
                if (max >= 0 && parts.Count == max)
                {
                    parts.Add(s[i..].TrimEnd());
                    break;
                }
                int j = i;
                while (j < s.Length && !char.IsWhiteSpace(s[j])) j++;
                parts.Add(s[i..j]);
                i = j;
            }
            return parts;
        }
        if (sep is not string separator || separator.Length == 0) throw Error(at, "split() needs a non-empty string separator");
        int start = 0;
        while (max < 0 || parts.Count < max)
        {
            int k = s.IndexOf(separator, start, StringComparison.Ordinal);
            if (k < 0) break;
            parts.Add(s[start..k]);
            start = k + separator.Length;
        }
        parts.Add(s[start..]);
        return parts;
    }

    private static string Replace(string s, string old, string replacement, object? count, Loc at)
    {
        long max = count == null ? -1 : ToInt(count, at);
        if (max < 0) return old.Length == 0 ? string.Concat(CodePoints(s).Select(c => replacement + c)) + replacement : s.Replace(old, replacement, StringComparison.Ordinal);
        var sb = new StringBuilder();
        int start = 0;
        for (long n = 0; n < max; n++)
        {
            int k = old.Length == 0 ? (start <= s.Length ? start : -1) : s.IndexOf(old, start, StringComparison.Ordinal);
            if (k < 0) break;
            sb.Append(s, start, k - start).Append(replacement);
            if (old.Length == 0)
            {
                if (k < s.Length) sb.Append(s[k]);
                start = k + 1;
            }
            else start = k + old.Length;
        }
        if (start < s.Length) sb.Append(s, start, s.Length - start);
        return sb.ToString();
    }

    private static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

    /// <summary>Python's str.title(): a letter after a non-letter is upper-cased, every other letter lower-cased.</summary>
    private static string PyTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool previousIsLetter = false;
        foreach (char c in s)
        {
            sb.Append(previousIsLetter ? char.ToLowerInvariant(c) : char.ToUpperInvariant(c));
            previousIsLetter = char.IsLetter(c);
        }
        return sb.ToString();
    }

    /// <summary>jinja2's title filter: words begin after whitespace, '-' or an opening bracket.</summary>
    private static string JinjaTitle(string s)
    {
        var sb = new StringBuilder(s.Length);
        bool wordStart = true;
        foreach (char c in s)
        {
            bool separator = char.IsWhiteSpace(c) || c is '-' or '(' or '{' or '[' or '<';
            sb.Append(wordStart ? char.ToUpperInvariant(c) : char.ToLowerInvariant(c));
            wordStart = separator;
        }
        return sb.ToString();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Filters and tests

    private static object? ApplyFilter(string name, object? v, List<object?> args, Dictionary<string, object?> kwargs, Loc at)
    {
        switch (name)
        {
            case "default" or "d":
                bool boolean = IsTrue(Arg(args, kwargs, 1, "boolean", false));
                return v is Undefined || (boolean && !IsTrue(v)) ? Arg(args, kwargs, 0, "default_value", "") : v;
            case "length" or "count":
                return v switch
                {
                    string s => (long)CodePoints(s).Count,
                    IReadOnlyList<object?> list => (long)list.Count,
                    IReadOnlyDictionary<string, object?> dict => (long)dict.Count,
                    Undefined => 0L,
                    _ => throw Error(at, $"a {TypeName(v)} has no length"),
                };
            case "trim": return Strip(Str(v), Arg(args, kwargs, 0, "chars", null), true, true);
            case "upper": return Str(v).ToUpperInvariant();
            case "lower": return Str(v).ToLowerInvariant();
            case "capitalize": return Capitalize(Str(v));
            case "title": return JinjaTitle(Str(v));
            case "string": return Str(v);
            case "safe": return v;
            case "replace":
                return Replace(Str(v), Str(Arg(args, kwargs, 0, "old", "")), Str(Arg(args, kwargs, 1, "new", "")), Arg(args, kwargs, 2, "count", null), at);
            case "first" or "last":
                if (v is Undefined) return v;
                var seq = Iterate(v, at);
                return seq.Count == 0 ? new Undefined($"{TypeName(v)} is empty: no {name} item") : seq[name == "first" ? 0 : seq.Count - 1];
            case "join":
                string separator = Str(Arg(args, kwargs, 0, "d", ""));
                var attribute = Arg(args, kwargs, 1, "attribute", null);
                return string.Join(separator, Iterate(v, at).Select(x => Str(attribute == null ? x : AttributePath(x, attribute, at))));
            case "list": return Iterate(v, at).ToList();
            case "reverse":
                if (v is string str) return string.Concat(Enumerable.Reverse(CodePoints(str)));
                var reversed = Iterate(v, at).Reverse().ToList();
                return v is PyTuple ? new PyTuple([.. reversed]) : reversed;
            case "items":
                if (v is Undefined) return new List<object?>();
                if (v is not IReadOnlyDictionary<string, object?> d) throw Error(at, $"items needs a dict, not {TypeName(v)}");
                return d.Select(kv => (object?)new PyTuple([kv.Key, kv.Value])).ToList();
            case "dict":
                return v as IReadOnlyDictionary<string, object?> ?? throw Error(at, $"dict needs a dict, not {TypeName(v)}");
            case "int": return ToIntFilter(v, Arg(args, kwargs, 0, "default", 0L), at);
            case "float": return ToFloatFilter(v, Arg(args, kwargs, 0, "default", 0.0), at);
            case "abs":
                return v switch
                {
                    long l => (object)Math.Abs(l),
                    double dd => Math.Abs(dd),
                    bool b => b ? 1L : 0L,
                    _ => throw Error(at, $"abs needs a number, not {TypeName(v)}"),
                };
            case "sum":
                object? total = Arg(args, kwargs, 1, "start", 0L);
                var sumAttribute = Arg(args, kwargs, 0, "attribute", null);
                foreach (var x in Iterate(v, at)) total = Arithmetic("+", total, sumAttribute == null ? x : AttributePath(x, sumAttribute, at), at);
                return total;
            case "min" or "max":
                var values = Iterate(v, at);
                if (values.Count == 0) return new Undefined($"{name} of an empty sequence");
                var best = values[0];
                foreach (var x in values.Skip(1))
                    if (Order(x, best, name == "min" ? "<" : ">", at) is var c && (name == "min" ? c < 0 : c > 0)) best = x;
                return best;
            case "unique":
                var unique = new List<object?>();
                foreach (var x in Iterate(v, at)) if (!unique.Any(y => PyEquals(x, y))) unique.Add(x);
                return unique;
            case "tojson":
                return ToJson(v, Arg(args, kwargs, 0, "indent", null), IsTrue(Arg(args, kwargs, 3, "sort_keys", false)),
                    Arg(args, kwargs, 2, "separators", null), at);
            case "selectattr" or "rejectattr":
                var attr = Arg(args, kwargs, 0, "attribute", null) ?? throw Error(at, $"{name} needs an attribute name");
                return Iterate(v, at).Where(x => SelectTest(AttributePath(x, attr, at), args, 1, at) == (name == "selectattr")).ToList();
            case "select" or "reject":
                return Iterate(v, at).Where(x => SelectTest(x, args, 0, at) == (name == "select")).ToList();
            case "map":
                if (kwargs.TryGetValue("attribute", out var mapAttribute))
                {
                    bool hasDefault = kwargs.TryGetValue("default", out var mapDefault);
                    return Iterate(v, at).Select(x => AttributePath(x, mapAttribute, at) is var found && found is Undefined && hasDefault ? mapDefault : found).ToList();
                }
                if (args.Count == 0 || args[0] is not string filter || !FilterNames.Contains(filter))
                    throw Error(at, "map needs attribute=... or the name of a known filter");
                return Iterate(v, at).Select(x => ApplyFilter(filter, x, args.Skip(1).ToList(), [], at)).ToList();
            default:
                throw Error(at, $"unknown or unsupported filter '{name}'");
        }
    }

    /// <summary>selectattr / select: truthiness without a test name, else the named test with its arguments.</summary>
    private static bool SelectTest(object? value, List<object?> args, int testIndex, Loc at)
    {
        if (args.Count <= testIndex) return IsTrue(value);
        if (args[testIndex] is not string test || !TestNames.Contains(test)) throw Error(at, $"unknown test {Repr(args[testIndex])}");
        return ApplyTest(test, value, args.Skip(testIndex + 1).ToList(), at);
    }

    /// <summary>An attribute given as "a.b.0": each part looked up as jinja2's getitem does (digits index lists).</summary>
    private static object? AttributePath(object? value, object? path, Loc at)
    {
        if (path is long) return GetItem(value, path, at);
        foreach (string part in Str(path).Split('.'))
        {
            object key = long.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out long index) ? index : part;
            value = GetItem(value, key, at);
        }
        return value;
    }

    private static object? ToIntFilter(object? v, object? fallback, Loc at) => v switch
    {
        long or bool => ToLongExact(v),
        double d when !double.IsNaN(d) && !double.IsInfinity(d) => (long)Math.Truncate(d),
        string s when long.TryParse(s.Trim().Replace("_", ""), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l) => l,
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && !double.IsNaN(d) && !double.IsInfinity(d) => (long)Math.Truncate(d),
        Undefined u => throw Error(at, u.Hint),
        _ => fallback,
    };

    private static object? ToFloatFilter(object? v, object? fallback, Loc at) => v switch
    {
        long or bool or double => ToDouble(v),
        string s when double.TryParse(s.Trim(), NumberStyles.Float, CultureInfo.InvariantCulture, out double d) => d,
        Undefined u => throw Error(at, u.Hint),
        _ => fallback,
    };

    private static bool ApplyTest(string name, object? v, List<object?> args, Loc at)
    {
        object? Operand() => args.Count > 0 ? args[0] : throw Error(at, $"test '{name}' needs an argument");
        switch (name)
        {
            case "defined": return v is not Undefined;
            case "undefined": return v is Undefined;
            case "none": return v == null;
            case "string": return v is string;
            case "number": return IsNumber(v); // bool is a number in Python, as jinja2's test says
            case "integer": return v is long;
            case "float": return v is double;
            case "boolean": return v is bool;
            case "true": return v is true;
            case "false": return v is false;
            case "mapping": return v is IReadOnlyDictionary<string, object?>;
            // jinja2's Undefined iterates (as empty) and has a length, so both tests hold for it.
            case "iterable" or "sequence": return v is string or IReadOnlyList<object?> or IReadOnlyDictionary<string, object?> or Undefined;
            case "callable": return v is Callable;
            case "lower": return v is string lo && lo == lo.ToLowerInvariant();
            case "upper": return v is string up && up == up.ToUpperInvariant();
            case "odd": return Arithmetic("%", v, 2L, at) is long odd && odd == 1;
            case "even": return Arithmetic("%", v, 2L, at) is long even && even == 0;
            case "divisibleby": return PyEquals(Arithmetic("%", v, Operand(), at), 0L);
            case "eq" or "equalto": return PyEquals(v, Operand());
            case "ne": return !PyEquals(v, Operand());
            case "lt" or "lessthan": return CompareOrder("<", v, Operand(), at);
            case "le": return CompareOrder("<=", v, Operand(), at);
            case "gt" or "greaterthan": return CompareOrder(">", v, Operand(), at);
            case "ge": return CompareOrder(">=", v, Operand(), at);
            case "in": return Contains(Operand(), v, at);
            case "sameas":
                var other = Operand();
                return v is null or bool or long or double or string or Undefined ? PyEquals(v, other) && v?.GetType() == other?.GetType() : ReferenceEquals(v, other);
            default: throw Error(at, $"unknown or unsupported test '{name}'");
        }
    }

    /// <summary>transformers' tojson: json.dumps(value, ensure_ascii=False, indent, separators, sort_keys).</summary>
    private static string ToJson(object? value, object? indent, bool sortKeys, object? separators, Loc at)
    {
        string? indentText = indent switch
        {
            null => null,
            long n => new string(' ', (int)Math.Clamp(n, 0, 64)),
            string s => s,
            _ => throw Error(at, "tojson indent must be a number or a string"),
        };
        string itemSeparator = indentText == null ? ", " : ",", keySeparator = ": ";
        if (separators != null)
        {
            if (separators is not IReadOnlyList<object?> { Count: 2 } pair || pair[0] is not string i || pair[1] is not string k)
                throw Error(at, "tojson separators must be a pair of strings");
            (itemSeparator, keySeparator) = (i, k);
        }
        var sb = new StringBuilder();
        void Write(object? v, int level)
        {
            switch (v)
            {
                case null: sb.Append("null"); return;
                case bool b: sb.Append(b ? "true" : "false"); return;
                case long l: sb.Append(l.ToString(CultureInfo.InvariantCulture)); return;
                case double d:
                    sb.Append(double.IsNaN(d) ? "NaN" : double.IsPositiveInfinity(d) ? "Infinity" : double.IsNegativeInfinity(d) ? "-Infinity" : PyFloat(d));
                    return;
                case string s: JsonString(sb, s); return;
                case IReadOnlyList<object?> list:
                    WriteContainer('[', ']', list.Count, level, list.Select<object?, Action>(x => () => Write(x, level + 1)));
                    return;
                case IReadOnlyDictionary<string, object?> dict:
                    var entries = sortKeys ? dict.OrderBy(kv => kv.Key, StringComparer.Ordinal) : dict.AsEnumerable();
                    WriteContainer('{', '}', dict.Count, level, entries.Select<KeyValuePair<string, object?>, Action>(kv => () =>
                    {
                        JsonString(sb, kv.Key);
                        sb.Append(keySeparator);
                        Write(kv.Value, level + 1);
                    }));
                    return;
                default: throw Error(at, $"tojson cannot write a {TypeName(v)}");
            }
        }
        void WriteContainer(char open, char close, int count, int level, IEnumerable<Action> items)
        {
            sb.Append(open);
            if (count == 0)
            {
                sb.Append(close);
                return;
            }
            bool first = true;
            foreach (var item in items)
            {
                if (!first) sb.Append(itemSeparator);
                if (indentText != null) sb.Append('\n').Append(string.Concat(Enumerable.Repeat(indentText, level + 1)));
                item();
                first = false;
            }
            if (indentText != null) sb.Append('\n').Append(string.Concat(Enumerable.Repeat(indentText, level)));
            sb.Append(close);
        }
        Write(value, 0);
        return sb.ToString();
    }

    /// <summary>A JSON string as Python's json writes it with ensure_ascii=False: only '"', '\' and control characters escaped.</summary>
    private static void JsonString(StringBuilder sb, string s)
    {
        sb.Append('"');
        foreach (char c in s)
        {
            switch (c)
            {
                case '"': sb.Append("\\\""); break;
                case '\\': sb.Append("\\\\"); break;
                case '\n': sb.Append("\\n"); break;
                case '\r': sb.Append("\\r"); break;
                case '\t': sb.Append("\\t"); break;
                case '\b': sb.Append("\\b"); break;
                case '\f': sb.Append("\\f"); break;
                default:
                    if (c < 0x20) sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
                    else sb.Append(c);
                    break;
            }
        }
        sb.Append('"');
    }
}
