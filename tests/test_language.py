import pytest

from bilingual_qa import language as lang


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What mechanism will Chongqing set up?", "en"),
        ("重慶將與哪些使領館建立機制？", "zh-Hant"),
        ("重庆将与哪些使领馆建立机制？", "zh-Hans"),
        ("RCEP是什么?", "zh-Hans"),
        ("What is 華龍網?", "en"),
        ("Who translated it? 誰", "en"),
    ],
)
def test_question_language(text, expected):
    assert lang.question_language(text) == expected


def test_script_defaults_when_characters_are_shared():
    assert lang.chinese_script("中国", default=lang.HANT) in (lang.HANS, lang.HANT)
    assert lang.chinese_script("合作", default=lang.HANS) == lang.HANS
    assert lang.chinese_script("合作", default=lang.HANT) == lang.HANT


def test_conversion_round_trip_keeps_other_characters():
    text = "重慶 RCEP 2023 陸海新通道。"
    simplified = lang.to_script(text, lang.HANS)
    assert simplified == "重庆 RCEP 2023 陆海新通道。"
    assert lang.to_script(simplified, lang.HANT) == text
    assert lang.to_script(text, lang.EN) == text


def test_lexical_tokens_match_across_scripts():
    assert lang.lexical_tokens("重慶陸海新通道") == lang.lexical_tokens("重庆陆海新通道")


def test_english_tokens_are_stemmed():
    assert lang.lexical_tokens("missions mission") == ["mission", "mission"]


def test_key_terms_drop_question_words():
    assert "what" not in lang.key_terms("What will Chongqing do?")
    terms = lang.key_terms("重庆有哪些国际友城？")
    assert "哪些" not in terms and "友城" in terms


@pytest.mark.parametrize(
    ("english", "chinese"),
    [
        ("Who translated this article?", "這篇文章的譯者是誰?"),
        ("According to the text, what is RCEP?", "根據文中提到的內容，RCEP是什麼?"),
    ],
)
def test_words_that_point_at_the_document_are_not_terms_in_either_language(english, chinese):
    # The English list drops "article", "text", "according", "mentioned"; Chinese drops the same.
    assert len(lang.key_terms(english)) == 1
    assert not {"这篇", "文章", "文中", "提到", "根据"} & set(lang.key_terms(chinese))
    assert "文件" in lang.key_terms("wamerican 提供什么文件？")  # 文件 is also "file"


def test_anchors_are_numbers_and_acronyms():
    assert lang.anchors("RCEP and LMC in 2023, 10場以上") == {"RCEP", "LMC", "2023", "10"}


def test_detect_language_short_latin_is_english_and_short_han_is_chinese():
    assert lang.detect_language("Source/CQNEWS") == "en"
    assert lang.detect_language("文/華龍網") == "zh-Hant"
    assert lang.detect_language("123 456") == "und"


LONG_TEXTS = {
    "en": "The municipal government will open forty new logistics hubs along the corridor by 2027.",
    "fr": "Le gouvernement municipal ouvrira quarante nouveaux centres logistiques le long du corridor.",
    "de": "Die Stadtregierung wird bis 2027 vierzig neue Logistikzentren entlang des Korridors eröffnen.",
    "vi": "Chính quyền thành phố sẽ mở bốn mươi trung tâm hậu cần mới dọc theo hành lang vào năm 2027.",
    "ru": "Городское правительство откроет сорок новых логистических центров вдоль коридора к 2027 году.",
    "el": "Η δημοτική κυβέρνηση θα ανοίξει σαράντα νέους κόμβους εφοδιαστικής κατά μήκος του διαδρόμου.",
}


@pytest.mark.parametrize(("code", "text"), LONG_TEXTS.items())
def test_detect_language_names_other_languages(code, text):
    assert lang.detect_language(text) == code


@pytest.mark.parametrize("text", [LONG_TEXTS["en"], LONG_TEXTS["fr"], LONG_TEXTS["de"], LONG_TEXTS["vi"]])
def test_latin_text_is_told_apart_as_by_all_profiles(text):
    """Latin text is scored against the Latin-alphabet profiles only: the same verdict as all 55."""
    from langdetect import DetectorFactory, detect_langs

    DetectorFactory.seed = 0
    assert lang.detect_language(text) == detect_langs(text)[0].lang


def test_english_is_recognized_by_its_function_words_alone():
    assert lang._clearly_english(LONG_TEXTS["en"] + " It is the hub of the west.")
    # Other Latin-alphabet languages never pass the shortcut; langdetect decides them.
    for code in ("fr", "de", "vi"):
        assert not lang._clearly_english(LONG_TEXTS[code])
    dutch = "De gemeente is van plan om veertig nieuwe centra te openen, dat is de bedoeling."
    assert not lang._clearly_english(dutch)


@pytest.mark.parametrize(
    ("question", "language", "version", "left"),
    [
        ("What is the Chinese name of the forum?", "en", "zh", "What is the   of the forum?"),
        ("How is the mayor's name written in Chinese characters?", "en", "zh", None),
        ("What does the Chinese version say about the budget?", "en", "zh", None),
        ("論壇的英文名稱是什麼?", "zh-Hant", "en", None),
        ("英文版怎么写市长的职务?", "zh-Hans", "en", None),
        # Asking about one's own language's version changes nothing.
        ("What does the English version say about the budget?", "en", None, None),
        ("中文版怎麼說?", "zh-Hant", None, None),
        ("Who is the Chinese ambassador?", "en", None, None),
        ("What is the Chinese for Foreign Affairs Office?", "en", "zh", "What is   Foreign Affairs Office?"),
        ("What is the Chinese word for corridor?", "en", "zh", None),
        ("Which Chinese foreign ministry officials attended?", "en", None, None),
        ("How is the Chinese formed?", "en", None, None),
    ],
)
def test_version_requests_name_the_other_version(question, language, version, left):
    found, rest = lang.version_request(question, language)
    assert found == version
    if version is None:
        # Its own version names no term to look for ("the English version", "中文版").
        kept = [t for t in lang.key_terms(question) if t not in ("english", "version")]
        assert lang.key_terms(rest) == kept
        assert not {"english", "version", "中文"} & set(lang.key_terms(rest))
    else:
        assert rest != question and not lang.version_request(rest, language)[0]
    if left is not None:
        assert rest == left


def test_chinese_prose_full_of_latin_codes_is_still_chinese():
    # Han characters are a minority of the letters here, but nothing Latin reads as English prose.
    codes = (
        "x 視窗系統的終端機模擬器，支援各種編碼，包括 ISO-8859-1、TCVN5712、VISCII、EUC-JP、KOI8-R、"
        "CP1251、GEORGEAN-PS、EUC-JISX0213、ISO-2022-JP、Shift_JIS、ISO-2022-KR、EUC-KR、UHC、JOHAB、GBK、Big5"
    )
    assert lang.cjk_ratio(codes) < 0.3
    assert lang.detect_language(codes) == "zh-Hant"
    assert lang.detect_language("tcpd — Wietse Venema 的 TCP 包裝工具。亦稱為 TCPD 或 LOG_TCP。") == "zh-Hant"
    # English prose that names a few Chinese words, and short credits, stay English.
    assert lang.detect_language("Translation/熊灵松 and Niu Kexin") == "en"
    prose = (
        "The 重慶市政府外辦 office said that the corridor will be built with the help of the "
        "西部陸海新通道 group."
    )
    assert lang.detect_language(prose) == "en"


def test_one_han_class_everywhere():
    import re

    han = re.compile(f"[{lang.HAN}]")
    for a, b in lang.HAN_RANGES:
        for o in (a, b):
            assert lang.is_cjk(chr(o)) and han.fullmatch(chr(o))
        for o in (a - 1, b + 1):
            assert lang.is_cjk(chr(o)) == any(x <= o <= y for x, y in lang.HAN_RANGES)
    for ch in "aZ9，。ア한\u3000":
        assert not lang.is_cjk(ch) and not han.fullmatch(ch)
    # a rare-character name (extension B) is one Chinese token run, not dropped
    assert "\U00020bb7" in "".join(lang.lexical_tokens("\U00020bb7野家"))
    assert lang.cjk_ratio("重慶 RCEP") >= lang.CHINESE_SHARE > lang.cjk_ratio("RCEP trade corridor 重")


@pytest.mark.parametrize(
    ("taiwan", "mainland"),
    [("軟體", "软件"), ("資訊", "信息"), ("程式設計", "编程"), ("網路", "网络")],
)
def test_regional_vocabulary_meets_in_lexical_matching(taiwan, mainland):
    assert set(lang.key_terms(mainland)) <= set(lang.lexical_tokens(f"這個套件的{taiwan}很好"))


def test_simplified_text_is_not_read_as_taiwan_usage():
    # tw2sp would turn the mainland's 程序 ("program") into 进程 ("process").
    assert "程序" in lang.normalize("这个程序的界面")
    assert lang.normalize("這個程式") == "这个程序" == lang.normalize("这个程序")


@pytest.mark.parametrize(
    ("question", "language"),
    [
        ("重慶は何回イベントを開催しますか？", "ja"),  # kanji beside kana: Japanese, not Chinese
        ("重慶市の計画", "ja"),
        ("重慶은 무엇인가", "ko"),  # hanja beside hangul
        ("Сколько мероприятий проведет Чунцин?", "ru"),
        ("Что такое RCEP?", "ru"),
        ("ما هو الممر؟", "ar"),
        ("ทางเดินคืออะไร", "th"),
        ("How many events will Chongqing hold?", None),
        ("Combien d’événements Chongqing organisera-t-il ?", None),  # Latin script: as English
        ("重庆将举办多少场推介活动？", None),
        ("Москва 是什么城市？", None),  # a foreign name in a Chinese question
        ("What does Ελλάδα mean here?", None),
        ("ＲＣＥＰ是什么", None),
        ("???", None),
    ],
)
def test_unserved_scripts_are_named_and_served_ones_are_not(question, language):
    assert lang.unserved_language(question) == language


def test_hong_kong_variants_meet_taiwan_and_mainland_forms():
    # 衞 and 綫 are Hong Kong's forms of 衛 and 線; lexical matching must not keep them apart.
    hong_kong, taiwan, mainland = "香港的衞生署和電綫", "香港的衛生署和電線", "香港的卫生署和电线"
    assert lang.lexical_tokens(hong_kong) == lang.lexical_tokens(taiwan) == lang.lexical_tokens(mainland)
    assert lang.key_terms(hong_kong) == lang.key_terms(mainland)


@pytest.mark.parametrize(
    ("line", "credits"),
    [
        ("Source/CQNEWS", "来源"),
        ("Translation/Xiong Lingsong and Niu Kexin", "译者"),
        ("Translator: Li Ming", "翻译"),
        ("文/華龍網", "作者"),
        ("記者 王芳", "author"),
        ("攝影：李偉", "photo"),
    ],
)
def test_a_credit_line_carries_its_label_in_both_languages(line, credits):
    assert credits in lang.credit_words(line)
    # … so a question in either language meets it lexically.
    assert set(lang.lexical_tokens(credits)) <= set(lang.lexical_tokens(line))


@pytest.mark.parametrize(
    "text",
    [
        "Who translated the article?",
        "譯者是誰?",
        "Source of the problem is unclear and it goes on.",
        "From the beginning, the plan was clear.",
        "By 2025, Chongqing will build ten warehouses.",
        "Source: the plan says so.",
        "文化交流",
        "重慶 將建設十個海外倉",
    ],
)
def test_ordinary_text_and_questions_are_no_credit_lines(text):
    assert lang.credit_words(text) == ""
