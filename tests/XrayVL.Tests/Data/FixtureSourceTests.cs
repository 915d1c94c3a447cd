using XrayVL.Tests.Support;
using System.IO.Compression;
using System.Text;
using XrayVL.Data;
using XrayVL.Data.Sources;

namespace XrayVL.Tests.Data;

/// <summary>Sources whose data is not on this machine, tested on small trees written in their published layouts.</summary>
public class FixtureSourceTests
{
    private static string OpenIXml(int uid, string findings, string impression, string[] images, string mesh = "normal") => $"""
        <?xml version="1.0" encoding="utf-8"?>
        <eCitation>
           <meta type="rr"/>
           <uId id="CXR{uid}"/>
           <pmcId id="{uid}"/>
           <docSource>CXR</docSource>
           <IUXRId id="{uid}"/>
           <MedlineCitation Owner="Indiana University" Status="supplied by publisher">
              <Article PubModel="Electronic">
                 <ArticleTitle>Indiana University Chest X-ray Collection</ArticleTitle>
                 <Abstract>
                    <AbstractText Label="COMPARISON">None.</AbstractText>
                    <AbstractText Label="INDICATION">Positive TB test</AbstractText>
                    <AbstractText Label="FINDINGS">{findings}</AbstractText>
                    <AbstractText Label="IMPRESSION">{impression}</AbstractText>
                 </Abstract>
              </Article>
           </MedlineCitation>
           <MeSH>
              <major>{mesh}</major>
              <automatic>automatic term</automatic>
           </MeSH>
           {string.Concat(images.Select(i => $"<parentImage id=\"{i}\"><figureId>F1</figureId><caption>Xray</caption></parentImage>"))}
        </eCitation>
        """;

    [Fact]
    public void OpenIXmlReportsWithImagesViewsAndMissingOnes()
    {
        using var t = new TempDir();
        t.Write("ecgen-radiology/1.xml", OpenIXml(1, "The heart is normal. There are no XXXX of a pleural effusion.", "Normal chest x-XXXX.",
            ["CXR1_1_IM-0001-3001", "CXR1_1_IM-0001-4001"]));
        t.Write("ecgen-radiology/2.xml", OpenIXml(2, "Borderline cardiomegaly.", "No acute pulmonary findings.", ["CXR2_IM-0652-1001", "CXR2_IM-0652-2001"],
            "Cardiomegaly/borderline;Pulmonary Artery/enlarged"));
        t.Write("ecgen-radiology/10.xml", OpenIXml(10, "", "", ["CXR10_IM-0002-1001"]));  // no report text
        t.Write("iu_projections.csv", "uid,filename,projection\n1,1_IM-0001-4001.dcm.png,Frontal\n1,1_IM-0001-3001.dcm.png,Lateral\n2,2_IM-0652-1001.dcm.png,Frontal\n");
        t.Write("NLMCXR_png/CXR1_1_IM-0001-3001.png", "png");
        t.Write("NLMCXR_png/CXR1_1_IM-0001-4001.png", "png");
        t.Write("NLMCXR_png/CXR2_IM-0652-1001.png", "png");  // CXR2_IM-0652-2001 is missing

        var r = new OpenIXmlSource().Read(new SourceOptions { Input = t.Path, Images = t.Path });
        Assert.Equal(3, r.Records);
        Assert.Equal(1, r.EmptyReports);
        Assert.Contains("CXR10", r.EmptyReportExamples[0]);
        Assert.Equal(["CXR1", "CXR2"], r.Studies.Select(s => s.StudyId));  // numeric file order
        var s1 = r.Studies[0];
        Assert.Equal("The heart is normal. There are no evidence of a pleural effusion.", s1.Findings);
        Assert.Equal("Normal chest x-ray.", s1.Impression);
        Assert.Equal("Positive TB test", s1.Indication);
        Assert.Equal("None.", s1.Comparison);
        Assert.Equal("normal", s1.Meta!["mesh"]);
        Assert.Equal([t.File("NLMCXR_png/CXR1_1_IM-0001-3001.png"), t.File("NLMCXR_png/CXR1_1_IM-0001-4001.png")], s1.Images.Select(i => i.Path));
        Assert.Equal([Views.Lateral, Views.Frontal], s1.Images.Select(i => i.View));  // joined through the projections CSV
        Assert.Equal(1, r.MissingImages);
        Assert.EndsWith("CXR2_IM-0652-2001.png", r.MissingImageExamples.Single());
        Assert.Single(r.Studies[1].Images);
        Assert.Equal("Cardiomegaly/borderline;Pulmonary Artery/enlarged", r.Studies[1].Meta!["mesh"]);
    }

    [Fact]
    public void OpenIXmlEmptyOrBrokenFileIsAnErrorNamingIt()
    {
        using var t = new TempDir();
        t.Write("ecgen-radiology/1.xml", OpenIXml(1, "Clear lungs.", "Normal.", []));
        string empty = t.Write("ecgen-radiology/2.xml", "");
        var e = Assert.Throws<XrayVLException>(() => new OpenIXmlSource().Read(new SourceOptions { Input = t.Path }));
        Assert.Contains(empty, e.Message);
        Assert.Contains("empty report file", e.Message);

        File.WriteAllText(empty, "<eCitation><uId id=");
        e = Assert.Throws<XrayVLException>(() => new OpenIXmlSource().Read(new SourceOptions { Input = t.Path }));
        Assert.Contains(empty, e.Message);
    }

    private const string MimicReport = """
                                         FINAL REPORT
         EXAMINATION:  CHEST (PA AND LAT)

         INDICATION:  ___F with new onset ascites  // eval for infection

         TECHNIQUE:  Chest PA and lateral

         COMPARISON:  None.

         FINDINGS:

         There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
         nodular opacities that most likely represent nipple shadows. The
         cardiomediastinal silhouette is normal.

         IMPRESSION:

         No acute cardiopulmonary process.
        """;

    private static void WriteGz(string path, string text)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var f = File.Create(path);
        using var gz = new GZipStream(f, CompressionLevel.Fastest);
        gz.Write(Encoding.UTF8.GetBytes(text));
    }

    private static TempDir MimicTree()
    {
        var t = new TempDir();
        t.Write("reports/files/p10/p10000032/s50414267.txt", MimicReport);
        t.Write("reports/files/p10/p10000032/s53189527.txt", "FINDINGS: Small left pleural effusion.\nIMPRESSION: Left effusion.");
        t.Write("reports/files/p11/p11000011/s51029426.txt", "Heart size is normal. Lungs are clear.");  // no headings
        t.Write("jpg/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg", "jpg");
        t.Write("jpg/files/p10/p10000032/s50414267/174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962.jpg", "jpg");
        t.Write("jpg/files/p10/p10000032/s53189527/2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab.jpg", "jpg");
        // s51029426's image is missing.
        WriteGz(t.File("jpg/mimic-cxr-2.0.0-split.csv.gz"),
            "dicom_id,study_id,subject_id,split\n" +
            "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,50414267,10000032,train\n" +
            "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,50414267,10000032,train\n" +
            "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,53189527,10000032,train\n" +
            "68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714,51029426,11000011,validate\n");
        t.Write("jpg/mimic-cxr-2.0.0-metadata.csv",
            "dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n" +
            "02aa804e-bde0afdd-112c0b34-7bc16630-4e384014,10000032,50414267,CHEST (PA AND LAT),PA,3056,2544\n" +
            "174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962,10000032,50414267,CHEST (PA AND LAT),LATERAL,3056,2544\n" +
            "2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab,10000032,53189527,CHEST (PORTABLE AP),AP,3056,2544\n");
        return t;
    }

    [Fact]
    public void MimicWithOfficialSplitViewsAndSections()
    {
        using var t = MimicTree();
        var r = new MimicSource().Read(new SourceOptions { Input = t.File("reports"), Images = t.File("jpg") });
        Assert.Equal(3, r.Records);
        Assert.Equal(["s50414267", "s53189527"], r.Studies.Select(s => s.StudyId));
        Assert.Equal(1, r.MissingImages);
        Assert.Equal(1, r.StudiesWithoutImages);
        Assert.Contains("68b5c4b1", r.MissingImageExamples.Single());
        var s = r.Studies[0];
        Assert.Equal(("p10000032", "train"), (s.PatientId, s.Split));
        Assert.Equal([Views.PA, Views.Lateral], s.Images.Select(i => i.View));
        Assert.Equal(t.File("jpg/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg"), s.Images[0].Path);
        Assert.StartsWith("There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular opacities", s.Findings);
        Assert.Equal("No acute cardiopulmonary process.", s.Impression);
        Assert.Equal("F with new onset ascites // eval for infection", s.Indication);
        Assert.Equal("None.", s.Comparison);

        var kept = new MimicSource().Read(new SourceOptions { Input = t.File("reports"), Images = t.File("jpg"), KeepMissingImages = true });
        var val = kept.Studies.Single(x => x.StudyId == "s51029426");
        Assert.Equal(("p11000011", "val"), (val.PatientId, val.Split));  // "validate" → "val"
        Assert.Equal("Heart size is normal. Lungs are clear.", val.Findings);
    }

    [Fact]
    public void MimicWithoutSplitScansTheReportTree()
    {
        using var t = MimicTree();
        File.Delete(t.File("jpg/mimic-cxr-2.0.0-split.csv.gz"));
        var r = new MimicSource().Read(new SourceOptions { Input = t.File("reports"), Images = t.File("jpg") });
        Assert.Equal(3, r.Records);
        Assert.Equal(2, r.Studies.Count);
        Assert.All(r.Studies, s => Assert.Null(s.Split));
        Assert.Equal(2, r.Studies[0].Images.Count);
        Assert.Equal(1, r.StudiesWithoutImages);
        Assert.Contains(r.Warnings, w => w.Contains("split"));
    }

    [Fact]
    public void MimicEmptyReportFileIsAnErrorNamingIt()
    {
        using var t = MimicTree();
        string empty = t.Write("reports/files/p10/p10000032/s53189527.txt", "  \n");
        var e = Assert.Throws<XrayVLException>(() => new MimicSource().Read(new SourceOptions { Input = t.File("reports"), Images = t.File("jpg") }));
        Assert.Contains(empty, e.Message);
        Assert.Contains("empty report", e.Message);
    }

    [Fact]
    public void JsonlReadsConversationsAndStudyLines()
    {
        using var t = new TempDir();
        t.Write("img/a.png", "png");
        string path = t.Write("mine.jsonl",
            "{\"id\": \"a\", \"images\": [\"img/a.png\"], \"conversations\": [{\"from\": \"human\", \"value\": \"<image>\\nDescribe.\"}, {\"from\": \"gpt\", \"value\": \"Clear lungs.\"}]}\n" +
            "\n" +
            "{\"image\": \"img/b.png\", \"conversations\": [{\"role\": \"user\", \"content\": \"这张胸片正常吗？\"}, {\"role\": \"assistant\", \"content\": \"是。\"}], \"task\": \"vqa\"}\n" +
            "{\"study_id\": \"s1\", \"patient_id\": \"p1\", \"images\": [{\"path\": \"img/a.png\", \"view\": \"PA\"}], \"findings\": \"Small effusion.\", \"split\": \"test\"}\n");
        var r = new JsonlSource().Read(new SourceOptions { Input = path });
        Assert.Equal(3, r.Records);
        Assert.Equal(2, r.Studies.Count);  // b.png is missing: its record is left out and counted
        Assert.Equal(1, r.MissingImages);
        Assert.Equal(1, r.StudiesWithoutImages);
        var a = r.Studies[0];
        Assert.Equal(("a", "Clear lungs.", "en"), (a.StudyId, a.Findings, a.Language));
        Assert.Equal(t.File("img/a.png"), a.Images[0].Path);
        Assert.Equal([new ConversationTurn("user", "Describe.", 1), new ConversationTurn("assistant", "Clear lungs.")], a.Conversations!);
        var s1 = r.Studies[1];
        Assert.Equal(("s1", "p1", "test", "Small effusion."), (s1.StudyId, s1.PatientId, s1.Split, s1.Findings));
        Assert.Null(s1.Conversations);

        var zh = new JsonlSource().Read(new SourceOptions { Input = path, KeepMissingImages = true }).Studies[1];
        Assert.Equal(("zh", "", 1), (zh.Language, zh.Findings, zh.Conversations![0].Images));  // a VQA answer is not a report
    }

    [Fact]
    public void JsonlBadLineIsAnErrorWithItsLineNumber()
    {
        using var t = new TempDir();
        string path = t.Write("bad.jsonl", "{\"images\": [], \"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}\n{\"images\": [\n");
        var e = Assert.Throws<XrayVLException>(() => new JsonlSource().Read(new SourceOptions { Input = path }));
        Assert.Contains(path + ":2", e.Message);
        File.WriteAllText(path, "{\"images\": [\"a.png\", \"b.png\"], \"conversations\": [{\"from\": \"human\", \"value\": \"<image><image><image>\"}]}\n");
        e = Assert.Throws<XrayVLException>(() => new JsonlSource().Read(new SourceOptions { Input = path }));
        Assert.Contains(":1: 3 <image> placeholders but 2 images", e.Message);
    }

    [Fact]
    public void UnknownSourceNameIsRefused()
    {
        var e = Assert.Throws<XrayVLException>(() => ReportSources.Create("chexpert"));
        Assert.Contains("iu-csv", e.Message);
        Assert.All(ReportSources.Names, n => Assert.Equal(n, ReportSources.Create(n).Name));
    }
}

public class CovidFixtureTests
{
    private static byte[] Jpeg(int width, int height)
    {
        var pixels = new byte[width * height];
        using var ms = new MemoryStream();
        new StbImageWriteSharp.ImageWriter().WriteJpg(pixels, width, height, StbImageWriteSharp.ColorComponents.Grey, ms, 90);
        return ms.ToArray();
    }

    private static TempDir Tree(string boxes)
    {
        var t = new TempDir();
        t.Write("metadata.csv",
            "patientid,offset,sex,age,finding,view,modality,folder,filename,clinical_notes\n" +
            "7,0,F,50,Pneumonia/Bacterial/Streptococcus,PA,X-ray,images,a.jpg,\"Chest radiograph shows right lower lobe consolidation, no pleural effusion.\"\n" +
            "7,3,F,50,No Finding,AP Supine,X-ray,images,b.jpg,\n" +
            "8,0,M,60,COVID-19,,CT,images,c.jpg,\n" +
            "9,0,M,70,todo,L,X-ray,images,missing.jpg,\n");
        t.WriteBytes("images/a.jpg", Jpeg(200, 100));  // annotated at 400×200: same aspect ratio
        t.WriteBytes("images/b.jpg", Jpeg(100, 100));  // annotated at 400×200: different aspect ratio → no boxes
        t.Write("annotations/imageannotation_ai_lung_bounding_boxes.json", boxes);
        return t;
    }

    private const string Coco = """
        {"categories": [{"id": 1, "name": "Right Lung"}, {"id": 2, "name": "Left Lung"}],
         "images": [{"id": 1, "file_name": "a.jpeg", "width": 400, "height": 200}, {"id": 2, "file_name": "b.png", "width": 400, "height": 200}],
         "annotations": [{"image_id": 1, "category_id": 1, "bbox": [40, 20, 100, 150]}, {"image_id": 1, "category_id": 2, "bbox": [None]},
                         {"image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10]}]}
        """;

    [Fact]
    public void RowsLabelsAndBoxesOnTheGrid()
    {
        using var t = Tree(Coco.Replace("[None]", "[null, null, null, null]"));
        var r = new CovidSource().Read(new SourceOptions { Input = t.Path });
        Assert.Equal(4, r.Records);
        Assert.Equal(["covid-7-a", "covid-7-b"], r.Studies.Select(s => s.StudyId));  // CT left out, missing image counted
        Assert.Equal(1, r.MissingImages);
        Assert.Contains(r.Warnings, w => w.StartsWith("1 rows are not X-rays"));
        var a = r.Studies[0];
        Assert.Equal([new StudyBox(0, "Right Lung", 10, 10, 35, 85)], a.Boxes!);  // (40/400, 20/200, 140/400, 170/200) × 100
        Assert.Null(r.Studies[1].Boxes);
        Assert.Equal(1, a.Labels!["Pneumonia"]);
        Assert.Equal(1, a.Labels["Consolidation"]);       // from the notes
        Assert.Equal(0, a.Labels["Pleural Effusion"]);
        Assert.Null(a.Labels["No Finding"]);
        Assert.Equal(1, r.Studies[1].Labels!["No Finding"]);
        Assert.Equal("AP supine", r.Studies[1].Images[0].View);
    }

    [Fact]
    public void BrokenBoxFileIsAnErrorNamingIt()
    {
        using var t = Tree("{\"categories\": [], \"images\": [{\"id\": 1, \"width\": 4, \"height\": 2}], \"annotations\": []}");
        var e = Assert.Throws<XrayVLException>(() => new CovidSource().Read(new SourceOptions { Input = t.Path }));
        Assert.Contains("imageannotation_ai_lung_bounding_boxes.json", e.Message);
    }
}
