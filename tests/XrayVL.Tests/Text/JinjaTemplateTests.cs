using System.Text.Json;
using XrayVL.Tests.Support;
using XrayVL.Text;

namespace XrayVL.Tests.Text;

public class JinjaTemplateTests
{
    private static string Render(string template, params (string Name, object? Value)[] variables) =>
        JinjaTemplate.Parse(template).Render(variables.ToDictionary(v => v.Name, v => v.Value));

    private static Dictionary<string, object?> Message(string role, object? content) => new() { ["role"] = role, ["content"] = content };

    private static string RenderChat(string template, List<object?> messages, bool addGenerationPrompt = false) =>
        JinjaTemplate.Parse(template).Render(new Dictionary<string, object?>
        {
            ["messages"] = messages,
            ["add_generation_prompt"] = addGenerationPrompt,
            ["bos_token"] = "<s>",
            ["eos_token"] = "</s>",
        });

    private static string ErrorOf(string template, params (string Name, object? Value)[] variables) =>
        Assert.Throws<XrayVLException>(() => Render(template, variables)).Message;

    // -------------------------------------------------------------------------------------------------------------
    // Reference renderings

    [Fact]
    public void RendersQwen2InstructTemplateAsTransformersDoes()
    {
        string path = Path.Combine(Path.GetDirectoryName(SharedData.Root)!, "reference", "hf-transformers-4.40", "chat", "qwen2-instruct.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var template = JinjaTemplate.Parse(doc.RootElement.GetProperty("template").GetString()!);
        int cases = 0;
        foreach (var c in doc.RootElement.GetProperty("cases").EnumerateObject())
        {
            string rendered = template.Render(new Dictionary<string, object?>
            {
                ["messages"] = c.Value.GetProperty("messages"),
                ["add_generation_prompt"] = c.Value.GetProperty("add_generation_prompt").GetBoolean(),
            });
            Assert.True(c.Value.GetProperty("expected").GetString() == rendered, $"case {c.Name}: rendered {JsonSerializer.Serialize(rendered)}");
            cases++;
        }
        Assert.Equal(4, cases);
    }

    /// <summary>Messages as apply_chat_template gets them: string content, or image parts then a text part when there are images.</summary>
    private static List<object?> Messages(Conversation conversation)
    {
        var messages = new List<object?>();
        if (conversation.SystemPrompt != null) messages.Add(Message("system", conversation.SystemPrompt));
        foreach (var m in conversation.Messages)
        {
            string role = m.Role.ToString().ToLowerInvariant();
            if (m.ImageCount == 0) messages.Add(Message(role, m.Text));
            else
            {
                var parts = Enumerable.Range(0, m.ImageCount).Select(_ => (object?)new Dictionary<string, object?> { ["type"] = "image" }).ToList();
                parts.Add(new Dictionary<string, object?> { ["type"] = "text", ["text"] = m.Text });
                messages.Add(Message(role, parts));
            }
        }
        return messages;
    }

    public static TheoryData<int> ConversationIndices
    {
        get
        {
            var data = new TheoryData<int>();
            for (int i = 0; i < Conversations().Count; i++) data.Add(i);
            return data;
        }
    }

    private static List<Conversation> Conversations() =>
    [
        new Conversation().User("Describe the image.", imageCount: 1),
        Conversation.WithDefaultSystemPrompt("en").User("Describe the image.", imageCount: 1),
        Conversation.WithDefaultSystemPrompt("zh").User("描述这两张胸片。", imageCount: 2).Assistant("心肺未见异常。").User("有胸腔积液吗？"),
        new Conversation("Be brief.").User("Compare.", imageCount: 3).Assistant("Stable.\n\nNo change.").User("Any line?").Assistant("No."),
        new Conversation().User("No image here.").Assistant("Then I cannot read it.").User("  leading spaces and {{ braces }} {% tags %}"),
        new Conversation().User("", imageCount: 1),
    ];

    [Theory]
    [MemberData(nameof(ConversationIndices))]
    public void ProjectTemplateRendersAsChatTemplateRenderText(int index)
    {
        var conversation = Conversations()[index];
        var template = JinjaTemplate.Parse(ChatTemplate.JinjaTemplate);
        foreach (bool prompt in new[] { false, true })
        {
            string rendered = template.Render(new Dictionary<string, object?>
            {
                ["messages"] = Messages(conversation),
                ["add_generation_prompt"] = prompt,
            });
            Assert.Equal(ChatTemplate.RenderText(conversation, prompt), rendered);
        }
    }

    [Fact]
    public void ProjectTemplateReadsTextOnlyContentLists()
    {
        // A content list with only a text part renders as the same text given as a string.
        var parts = new List<object?> { new Dictionary<string, object?> { ["type"] = "text", ["text"] = "Hello." } };
        Assert.Equal("<|im_start|>user\nHello.<|im_end|>\n<|im_start|>assistant\n",
            RenderChat(ChatTemplate.JinjaTemplate, [Message("user", parts)], addGenerationPrompt: true));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Chat formats of our own, in the styles of common ones

    private const string LlamaStyle =
        """
        {%- if messages[0]['role'] == 'system' -%}
            {%- set system = messages[0]['content'] -%}
            {%- set turns = messages[1:] -%}
        {%- else -%}
            {%- set system = none -%}
            {%- set turns = messages -%}
        {%- endif -%}
        {%- for m in turns -%}
            {%- if (m['role'] == 'user') != (loop.index0 % 2 == 0) -%}
                {{- raise_exception('Roles must alternate user/assistant, starting with user.') -}}
            {%- endif -%}
            {%- if m['role'] == 'user' -%}
                {%- set text = m['content'].strip() -%}
                {%- if loop.first and system is not none -%}
                    {%- set text = '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + text -%}
                {%- endif -%}
                {{- bos_token + '[INST] ' + text + ' [/INST]' -}}
            {%- else -%}
                {{- ' ' + m['content'].strip() + ' ' + eos_token -}}
            {%- endif -%}
        {%- endfor -%}
        """;

    [Fact]
    public void LlamaStyleTemplateFoldsTheSystemPromptIntoTheFirstInstruction()
    {
        List<object?> messages = [Message("system", "Be brief."), Message("user", " Hi "), Message("assistant", "Hello!"), Message("user", "Bye")];
        Assert.Equal("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Bye [/INST]", RenderChat(LlamaStyle, messages));
        Assert.Equal("<s>[INST] Hi [/INST]", RenderChat(LlamaStyle, [Message("user", "Hi")]));
    }

    [Fact]
    public void RaiseExceptionFailsWithTheTemplatesMessage()
    {
        List<object?> messages = [Message("user", "Hi"), Message("user", "Again")];
        var error = Assert.Throws<XrayVLException>(() => RenderChat(LlamaStyle, messages));
        Assert.Equal("Roles must alternate user/assistant, starting with user.", error.Message);
        Assert.Throws<XrayVLException>(() => RenderChat(LlamaStyle, [Message("assistant", "Hi")]));
    }

    // No whitespace control at all: trim_blocks and lstrip_blocks alone keep the tags off the output.
    private const string VicunaStyle =
        """
        {% if messages[0].role == 'system' %}
        {{ messages[0].content }}

        {% endif %}
        {% for m in messages if m.role != 'system' %}
            {% if m.role == 'user' %}
        USER: {{ m.content }}
            {% else %}
        ASSISTANT: {{ m.content }}</s>
            {% endif %}
        {% endfor %}
        {% if add_generation_prompt %}
        ASSISTANT:
        {%- endif %}
        """;

    [Fact]
    public void VicunaStyleTemplateReliesOnTrimAndLstripBlocks()
    {
        List<object?> messages = [Message("system", "A chat."), Message("user", "Hi"), Message("assistant", "Hello"), Message("user", "Bye")];
        Assert.Equal("A chat.\n\nUSER: Hi\nASSISTANT: Hello</s>\nUSER: Bye\nASSISTANT:", RenderChat(VicunaStyle, messages, addGenerationPrompt: true));
        Assert.Equal("USER: Hi\n", RenderChat(VicunaStyle, [Message("user", "Hi")]));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Whitespace

    [Theory]
    [InlineData("{% if true %}\nyes\n{% endif %}\nafter", "yes\nafter")] // trim_blocks: one newline after a block tag goes
    [InlineData("{% if true %}\n\nyes{% endif %}", "\nyes")] // only one
    [InlineData("<ul>\n    {% for x in [1, 2] %}\n    <li>{{ x }}</li>\n    {% endfor %}\n</ul>", "<ul>\n    <li>1</li>\n    <li>2</li>\n</ul>")]
    [InlineData("  {{ 'a' }}\n", "  a")] // lstrip_blocks leaves expressions alone; the template's last newline is dropped
    [InlineData("x\n\n", "x\n")]
    [InlineData("x  {% if true %}y{% endif %}", "x  y")] // text before the tag on its line: no lstrip
    [InlineData("  {%+ if true %}y{% endif %}", "  y")] // {%+ turns lstrip off
    [InlineData("{% if true +%}\ny{% endif %}", "\ny")] // +%} turns trim off
    [InlineData("a  \n  {%- if true -%}  \n  b  {{- ' c ' -}}  d{% endif %}", "ab c d")]
    [InlineData("a\n  {# a comment #}\nb", "a\nb")] // comments are trimmed and lstripped as blocks
    [InlineData("a {#- a comment -#} b", "ab")]
    [InlineData("{{ 'x' }}\n{{ 'y' }}", "x\ny")] // no trimming after an expression
    [InlineData("a\r\nb{% if true %}\r\nc{% endif %}", "a\nbc")] // line endings are normalized
    public void WhitespaceControlFollowsJinja(string template, string expected) => Assert.Equal(expected, Render(template));

    // -------------------------------------------------------------------------------------------------------------
    // Statements

    [Fact]
    public void LoopVariables()
    {
        Assert.Equal("1 0 True False 3 3|2 1 False False 3 2|3 2 False True 3 1|",
            Render("{% for x in xs %}{{ loop.index }} {{ loop.index0 }} {{ loop.first }} {{ loop.last }} {{ loop.length }} {{ loop.revindex }}|{% endfor %}",
                ("xs", new[] { "a", "b", "c" })));
        Assert.Equal("-a-b,a-b-c,b-c-", Render("{% for x in 'abc' %}{{ loop.previtem }}-{{ x }}-{{ loop.nextitem }}{{ ',' if not loop.last }}{% endfor %}"));
        Assert.Equal("ab|ba", Render("{% for x in 'ab' %}{% for y in 'ab' if y != x %}{{ x }}{{ y }}{% endfor %}{{ '|' if loop.first }}{% endfor %}"));
    }

    [Fact]
    public void InlineLoopFilterCountsOnlyKeptItems()
    {
        Assert.Equal("1:2 of 2,2:3 of 2,", Render("{% for x in [1, 2, 3] if x > 1 %}{{ loop.index }}:{{ x }} of {{ loop.length }},{% endfor %}"));
        Assert.Equal("none", Render("{% for x in [1, 2] if x > 5 %}{{ x }}{% else %}none{% endfor %}"));
        Assert.Equal("empty", Render("{% for x in missing %}{{ x }}{% else %}empty{% endfor %}"));
    }

    [Fact]
    public void SetInsideALoopStaysInTheLoopButNamespaceCarriesOut()
    {
        Assert.Equal("1", Render("{% set x = 1 %}{% for i in [1, 2] %}{% set x = i %}{% endfor %}{{ x }}"));
        Assert.Equal("2", Render("{% set x = 1 %}{% if true %}{% set x = 2 %}{% endif %}{{ x }}"));
        Assert.Equal("True 6 2", Render(
            "{% set ns = namespace(found=false, total=0, last=none) %}{% for i in [1, 2, 3] %}{% if i == 2 %}{% set ns.found = true %}{% set ns.last = i %}{% endif %}" +
            "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.found }} {{ ns.total }} {{ ns.last }}"));
        Assert.Contains("only a namespace() takes attributes", ErrorOf("{% set d = {} %}{% set d.x = 1 %}"));
    }

    [Fact]
    public void SetForms()
    {
        Assert.Equal("2 1", Render("{% set a, b = 1, 2 %}{{ b }} {{ a }}"));
        Assert.Equal("HI BO", Render("{% set greeting %}Hi {{ who }}{% endset %}{{ greeting | upper }}", ("who", "bo")));
        Assert.Equal("a=1;b=2;", Render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
            ("d", new Dictionary<string, object?> { ["a"] = 1, ["b"] = 2 })));
    }

    [Fact]
    public void IfElifElse()
    {
        const string template = "{% if n is not defined %}none{% elif n > 2 %}big{% elif n > 1 %}mid{% else %}small{% endif %}";
        Assert.Equal("big", Render(template, ("n", 3)));
        Assert.Equal("mid", Render(template, ("n", 2)));
        Assert.Equal("small", Render(template, ("n", 1)));
        Assert.Equal("none", Render(template));
    }

    [Fact]
    public void MacrosBreakAndContinue()
    {
        Assert.Equal("<b>x</b>", Render("{% macro tag(name, close=false) %}<{{ '/' if close }}{{ name }}>{% endmacro %}{{ tag('b') }}x{{ tag('b', close=true) }}"));
        Assert.Equal("02", Render("{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}"));
        Assert.Equal("text", Render("{% generation %}text{% endgeneration %}"));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Expressions

    [Theory]
    [InlineData("{{ 1 + 2 * 3 }}", "7")]
    [InlineData("{{ 7 / 2 }} {{ 4 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7.5 % 2 }} {{ 2 ** 10 }}", "3.5 2.0 3 -4 2 1.5 1024")]
    [InlineData("{{ -2 ** 2 }}", "4")] // jinja2 binds unary minus tighter than **, unlike Python
    [InlineData("{{ 'ab' * 2 }} {{ [1] + [2] }} {{ 1 ~ 'x' ~ none ~ true }}", "abab [1, 2] 1xNoneTrue")]
    [InlineData("{{ [1, 'a', none, true, 2.0, 1e-05, (1,)] }} {{ {'a': 1, 'b': 'it\\'s'} }}", "[1, 'a', None, True, 2.0, 1e-05, (1,)] {'a': 1, 'b': \"it's\"}")]
    [InlineData("{{ not true or true }} {{ false and x.y }} {{ 0 or 'z' }} {{ 'y' and 5 }}", "True False z 5")]
    [InlineData("{{ 'a' if false else 'b' if true else 'c' }}|{{ 'x' if false }}|", "b||")]
    [InlineData("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ [1, 2] == [1, 2] }} {{ 'b' >= 'a' }}", "True False True True True True")]
    [InlineData("{{ 'a' in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1, 2] }} {{ 'x' in missing }}", "True True True True False")]
    [InlineData("{{ 'a' 'b' }} {{ \"q\\\"\\n\\u00e9\\x41\" }}", "ab q\"\n\u00e9A")]
    [InlineData("{{ True }} {{ False }} {{ None }} {{ true }} {{ none is none }}", "True False None True True")]
    [InlineData("{{ {'a': {'b': [1, 2]}}['a']['b'][1] }} {{ {'a': {'b': 1}}.a.b }}", "2 1")]
    public void ExpressionsEvaluateAsJinja(string template, string expected) => Assert.Equal(expected, Render(template));

    [Theory]
    [InlineData("{{ xs[1:] }}", "[2, 3, 4, 5]")]
    [InlineData("{{ xs[::-1] }}", "[5, 4, 3, 2, 1]")]
    [InlineData("{{ xs[-2:] }} {{ xs[:-1] }} {{ xs[::2] }} {{ xs[5:1:-2] }} {{ xs[10:] }}", "[4, 5] [1, 2, 3, 4] [1, 3, 5] [5, 3] []")]
    [InlineData("{{ 'abcdef'[1:4] }} {{ 'abcdef'[::-1] }} {{ 'abc'[-1] }} {{ 'héllo'[1] }}", "bcd fedcba c é")]
    [InlineData("{{ xs[0] }} {{ xs[-1] }} [{{ xs[9] }}] {{ xs[9] is defined }}", "1 5 [] False")]
    public void IndexingAndSlicingFollowPython(string template, string expected) =>
        Assert.Equal(expected, Render(template, ("xs", new[] { 1, 2, 3, 4, 5 })));

    [Fact]
    public void JsonVariablesKeepIntegersApartFromFloats()
    {
        using var doc = JsonDocument.Parse("""{"n": 3, "x": 2.5, "big": 1e20, "list": [1, "a", null, true], "d": {"k": false}}""");
        var variables = doc.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => (object?)p.Value);
        Assert.Equal("3 2.5 1e+20 [1, 'a', None, True] {'k': False} 1.5",
            JinjaTemplate.Parse("{{ n }} {{ x }} {{ big }} {{ list }} {{ d }} {{ n / 2 }}").Render(variables));
    }

    [Fact]
    public void MessageFieldsByAttributeOrSubscript()
    {
        var message = Message("user", "hi");
        Assert.Equal("user user hi [] False", Render("{{ m.role }} {{ m['role'] }} {{ m.content }} [{{ m.tool_calls }}] {{ m.tool_calls is defined }}", ("m", message)));
    }

    [Fact]
    public void UndefinedPrintsEmptyAndIsFalsyButFailsOnUse()
    {
        Assert.Equal("[] b False True 0", Render("[{{ missing }}] {{ 'a' if missing else 'b' }} {{ missing is defined }} {{ missing is undefined }} {{ missing | length }}"));
        // jinja2's default Undefined fails on attribute access, arithmetic and calls, naming the variable.
        Assert.Contains("'missing' is undefined", ErrorOf("{{ missing.attr }}"));
        Assert.Contains("'missing' is undefined", ErrorOf("{{ missing + 1 }}"));
        Assert.Contains("'missing' is undefined", ErrorOf("{{ missing() }}"));
    }

    [Theory]
    [InlineData("{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}", "a b|a")]
    [InlineData("{{ 'abc' | length }} {{ [1, 2] | length }} {{ {'a': 1} | count }} {{ '胸片' | length }}", "3 2 1 2")]
    [InlineData("{{ 'Ab' | upper }} {{ 'Ab' | lower }} {{ 'hELLO wORLD' | capitalize }} {{ 'hello wORLD-foo (bar)' | title }}", "AB ab Hello world Hello World-Foo (Bar)")]
    [InlineData("{{ missing | default('x') }} {{ none | default('x') }} {{ '' | default('x', true) }} {{ 'v' | d('x') }}", "x None x v")]
    [InlineData("{{ [1, 2, 3] | first }} {{ [1, 2, 3] | last }} {{ 'abc' | first }} [{{ [] | first }}]", "1 3 a []")]
    [InlineData("{{ ['a', 'b'] | join(', ') }} {{ [1, 2] | join }} {{ [{'n': 'x'}, {'n': 'y'}] | join('+', attribute='n') }}", "a, b 12 x+y")]
    [InlineData("{{ 'a-b-c' | replace('-', '+') }} {{ 'a-b-c' | replace('-', '', 1) }}", "a+b+c ab-c")]
    [InlineData("{{ 3 | string ~ 'x' }} {{ '42' | int + 1 }} {{ '4.7' | int }} {{ 'x' | int }} {{ 2.9 | int }} {{ '2.5' | float }}", "3x 43 4 0 2 2.5")]
    [InlineData("{{ 'ab' | list }} {{ {'k': 1} | list }} {{ [1, 2] | reverse | list }} {{ 'abc' | reverse }}", "['a', 'b'] ['k'] [2, 1] cba")]
    [InlineData("{{ [3, 1, 2] | max }} {{ [3, 1, 2] | min }} {{ [1, 2, 3] | sum }} {{ [1, 1, 2] | unique | list }} {{ -3 | abs }}", "3 1 6 [1, 2] 3")]
    [InlineData("{{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('odd') | list }} {{ ['a', 'b'] | map('upper') | join }}", "[1, 3] [2, 4] AB")]
    public void FiltersFollowJinja(string template, string expected) => Assert.Equal(expected, Render(template));

    [Fact]
    public void SelectattrRejectattrAndMap()
    {
        List<object?> messages = [Message("system", "s"), Message("user", "u1"), Message("assistant", "a"), Message("user", "u2")];
        Assert.Equal("2 u1,u2 s,a system",
            Render("{{ messages | selectattr('role', 'equalto', 'user') | list | length }} " +
                   "{{ messages | selectattr('role', 'eq', 'user') | map(attribute='content') | join(',') }} " +
                   "{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join(',') }} " +
                   "{{ (messages | selectattr('content') | first).role }}", ("messages", messages)));
    }

    [Fact]
    public void ToJsonWritesAsTransformersJsonDumps()
    {
        var tool = new Dictionary<string, object?>
        {
            ["name"] = "lookup",
            ["text"] = "é \"q\" <b> & \\ \n",
            ["args"] = new List<object?> { 1, 2.5, true, null, new Dictionary<string, object?>() },
        };
        // ensure_ascii=False: non-ASCII and HTML characters stay; keys keep their order; ", " and ": " separators.
        Assert.Equal("{\"name\": \"lookup\", \"text\": \"é \\\"q\\\" <b> & \\\\ \\n\", \"args\": [1, 2.5, true, null, {}]}",
            Render("{{ tool | tojson }}", ("tool", tool)));
        Assert.Equal("{\n  \"a\": 1,\n  \"b\": [\n    2,\n    []\n  ]\n}", Render("{{ {'a': 1, 'b': [2, []]} | tojson(indent=2) }}"));
        Assert.Equal("{\"a\": 2, \"b\": 1}", Render("{{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}"));
        Assert.Equal("\"x\"", Render("{{ 'x' | tojson }}"));
    }

    [Theory]
    [InlineData("{{ x is defined }} {{ y is undefined }} {{ none is none }} {{ 'a' is string }} {{ 1 is string }}", "True True True True False")]
    [InlineData("{{ 1 is number }} {{ 1.5 is number }} {{ 'a' is number }} {{ 1 is integer }} {{ 1.5 is float }}", "True True False True True")]
    [InlineData("{{ {} is mapping }} {{ [] is mapping }} {{ [] is iterable }} {{ 'a' is iterable }} {{ 1 is iterable }} {{ [] is sequence }}", "True False True True False True")]
    [InlineData("{{ true is boolean }} {{ 1 is boolean }} {{ true is true }} {{ 1 is true }} {{ false is false }} {{ 0 is false }}", "True False True False True False")]
    [InlineData("{{ 3 is odd }} {{ 3 is even }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }}", "True False True True False")]
    [InlineData("{{ 1 is not none }} {{ 'a' is not string }} {{ 2 is eq 2 }} {{ 2 is gt 1 }} {{ 'a' is in ['a'] }} {{ not 1 is odd }}", "True False True True True False")]
    public void TestsFollowJinja(string template, string expected) => Assert.Equal(expected, Render(template, ("x", 1)));

    [Theory]
    [InlineData("{{ '  hi  '.strip() }}|{{ '  hi  '.lstrip() }}|{{ '  hi  '.rstrip() }}|{{ 'xhix'.strip('x') }}", "hi|hi  |  hi|hi")]
    [InlineData("{{ 'hello'.startswith('he') }} {{ 'hello'.endswith('lo') }} {{ 'hello'.startswith(('x', 'h')) }} {{ 'hello'.endswith('he') }}", "True True True False")]
    [InlineData("{{ ' a  b '.split() }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a b c'.split(' ')[-1] }}", "['a', 'b'] ['a', 'b', '', 'c'] ['a', 'b,c'] c")]
    [InlineData("{{ 'aXbX'.replace('X', '-') }} {{ 'Ab'.upper() }} {{ 'Ab'.lower() }} {{ \"they're bill's 1st\".title() }} {{ 'aB'.capitalize() }}", "a-b- AB ab They'Re Bill'S 1St Ab")]
    [InlineData("{{ ', '.join(['a', 'b']) }} {{ 'banana'.count('an') }} {{ 'banana'.find('n') }}", "a, b 2 2")]
    public void StringMethodsFollowPython(string template, string expected) => Assert.Equal(expected, Render(template));

    [Fact]
    public void DictMethods()
    {
        var d = new Dictionary<string, object?> { ["b"] = 1, ["a"] = "x" };
        Assert.Equal("['b', 'a'] [1, 'x'] [('b', 1), ('a', 'x')] x dflt None",
            Render("{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }} {{ d.get('a') }} {{ d.get('z', 'dflt') }} {{ d.get('z') }}", ("d", d)));
    }

    // -------------------------------------------------------------------------------------------------------------
    // Errors

    [Theory]
    [InlineData("{% if x %}a", "line 1, column 4", "'if' is not closed")]
    [InlineData("{% endfor %}", "line 1, column 4", "'{% endfor %}'")]
    [InlineData("{{ 'abc }}", "line 1, column 4", "string literal is not closed")]
    [InlineData("{% include 'other.jinja' %}", "line 1, column 4", "unknown or unsupported tag 'include'")]
    [InlineData("a\nb {{ 1 + }}", "line 2, column 10", "unexpected '}}'")]
    [InlineData("{% for x in xs %}{% endif %}", "line 1, column 21", "'{% endif %}'")]
    [InlineData("{% break %}", "line 1, column 4", "'break' outside a for loop")]
    [InlineData("{{ 1 ", "line 1, column 1", "'{{' is not closed")]
    public void SyntaxErrorsNameTheLineColumnAndConstruct(string template, string position, string construct)
    {
        var error = Assert.Throws<XrayVLException>(() => JinjaTemplate.Parse(template));
        Assert.Contains(position, error.Message);
        Assert.Contains(construct, error.Message);
        Assert.DoesNotContain('\n', error.Message);
    }

    [Fact]
    public void UnknownFiltersAndTestsFailOnlyWhenEvaluated()
    {
        Assert.Contains("line 2, column 10: unknown or unsupported filter 'nofilter'", ErrorOf("ok\n  {{ x | nofilter }}"));
        Assert.Contains("line 1, column 9: unknown or unsupported test 'shiny'", ErrorOf("{{ x is shiny }}"));
        Assert.Equal("plain", Render("{% if tools %}{{ tools | nofilter }}{% else %}plain{% endif %}"));
    }

    [Fact]
    public void RuntimeErrorsNameTheLine()
    {
        Assert.Contains("line 2", ErrorOf("x\n{{ 1 + 'a' }}"));
        Assert.Contains("unsupported operand types for +: 'int' and 'str'", ErrorOf("{{ 1 + 'a' }}"));
        Assert.Contains("division by zero", ErrorOf("{{ 1 // 0 }}"));
        Assert.Contains("not iterable", ErrorOf("{% for x in 5 %}{% endfor %}"));
        Assert.Contains("is a Object", ErrorOf("{{ x }}", ("x", new object())));
    }
}
