"""Question templates and image labels of the synthetic data, in every language.

Templates are ``str.format`` patterns. Where a language cannot agree a word with a slot
without inflecting it (Portuguese gender, Russian case, Arabic definiteness) the slot is
quoted as a label instead (“...”, «...»), which keeps every question grammatical. Several
phrasings per question let held-out splits test a known fact under a new wording.

Rows follow ``LANGUAGES`` order: en, zh, ar, pt, ru, tr.
"""

from __future__ import annotations

import random

from jvlm_demo.synth_lexicon import LANGUAGES


def _t(*per_language: str | tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if len(per_language) != len(LANGUAGES):
        raise ValueError(f"expected {len(LANGUAGES)} entries, got {len(per_language)}")
    return {lang: (v,) if isinstance(v, str) else v for lang, v in zip(LANGUAGES, per_language)}


# --- words drawn inside images ------------------------------------------------------------
LABELS: dict[str, dict[str, tuple[str, ...]]] = {
    "receipt.title": _t("RECEIPT", "收据", "إيصال", "RECIBO", "ЧЕК", "FİŞ"),
    "receipt.date": _t("Date", "日期", "التاريخ", "Data", "Дата", "Tarih"),
    "receipt.total": _t("TOTAL", "合计", "المجموع", "TOTAL", "ИТОГО", "TOPLAM"),
    "form.title": _t("Registration form", "登记表", "استمارة التسجيل", "Formulário de inscrição",
                     "Регистрационная форма", "Kayıt formu"),
    "form.name": _t("Name", "姓名", "الاسم", "Nome", "Имя", "Ad"),
    "form.city": _t("City", "城市", "المدينة", "Cidade", "Город", "Şehir"),
    "form.age": _t("Age", "年龄", "العمر", "Idade", "Возраст", "Yaş"),
    "form.phone": _t("Phone", "电话", "الهاتف", "Telefone", "Телефон", "Telefon"),
    "form.code": _t("Code", "编号", "الرمز", "Código", "Код", "Kod"),
    "bar.title": _t("Sales", "销量", "المبيعات", "Vendas", "Продажи", "Satışlar"),
    "line.title": _t("Visitors", "访客", "الزوار", "Visitantes", "Посетители", "Ziyaretçiler"),
    "table.title": _t("Items sold", "销售数量", "الكميات المباعة", "Itens vendidos", "Продано товаров",
                      "Satılan ürünler"),
    "table.corner": _t("Item", "商品", "المنتج", "Item", "Товар", "Ürün"),
}

# --- answers that are not lexicon words ----------------------------------------------------
ANSWERS: dict[str, dict[str, tuple[str, ...]]] = {
    "left": _t("left", "左边", "اليسار", "esquerda", "слева", "solda"),
    "right": _t("right", "右边", "اليمين", "direita", "справа", "sağda"),
    "top": _t("top", "上面", "الأعلى", "em cima", "сверху", "üstte"),
    "bottom": _t("bottom", "下面", "الأسفل", "embaixo", "снизу", "altta"),
}

# --- questions ------------------------------------------------------------------------------
QUESTIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "receipt.total": _t(
        ("What is the total on the receipt?", "How much is the total?"),
        ("收据上的合计金额是多少？", "总共多少钱？"),
        ("ما المبلغ الإجمالي في الإيصال؟", "كم المجموع؟"),
        ("Qual é o total do recibo?", "Quanto é o total?"),
        ("Какая итоговая сумма в чеке?", "Сколько всего к оплате?"),
        ("Fişteki toplam tutar nedir?", "Toplam ne kadar?"),
    ),
    "receipt.date": _t(
        "What is the date on the receipt?", "收据上的日期是哪天？", "ما تاريخ الإيصال؟",
        "Qual é a data do recibo?", "Какая дата указана в чеке?", "Fişteki tarih nedir?",
    ),
    "receipt.price": _t(
        ("What is the price of {item}?", "How much does “{item}” cost on this receipt?"),
        ("{item}的价格是多少？", "{item}多少钱？"),
        ("ما سعر {item_the}؟", "بكم {item_the}؟"),
        ("Qual é o preço de “{item}”?", "Quanto custa “{item}”?"),
        ("Сколько стоит «{item}»?", "Какая цена у товара «{item}»?"),
        ("“{item}” fiyatı nedir?", "“{item}” kaç para?"),
    ),
    "receipt.count": _t(
        "How many items are on the receipt?", "收据上有几件商品？", "كم عدد المنتجات في الإيصال؟",
        "Quantos itens há no recibo?", "Сколько товаров в чеке?", "Fişte kaç ürün var?",
    ),
    "receipt.store": _t(
        "What is the name of the store?", "这家店叫什么名字？", "ما اسم المتجر؟",
        "Qual é o nome da loja?", "Как называется магазин?", "Mağazanın adı ne?",
    ),
    "form.field": _t(
        ("What is written in the “{label}” field?", "What does the form say for “{label}”?"),
        ("表格中“{label}”一栏填的是什么？", "“{label}”写的是什么？"),
        ("ما المكتوب في خانة «{label}»؟", "ماذا كُتب في حقل «{label}» في الاستمارة؟"),
        ("O que está escrito no campo “{label}”?", "Qual é o valor do campo “{label}” no formulário?"),
        ("Что указано в поле «{label}»?", "Что написано в графе «{label}»?"),
        ("“{label}” alanında ne yazıyor?", "Formdaki “{label}” bilgisi nedir?"),
    ),
    "chart.value": _t(
        ("What is the value for “{label}”?", "What value does the chart show for “{label}”?"),
        ("“{label}”的数值是多少？", "图中“{label}”对应的数值是多少？"),
        ("ما قيمة «{label}»؟", "ما القيمة المبيّنة لـ«{label}» في الرسم؟"),
        ("Qual é o valor de “{label}”?", "Que valor o gráfico mostra para “{label}”?"),
        ("Какое значение у категории «{label}»?", "Какое значение показано для категории «{label}»?"),
        ("“{label}” için değer nedir?", "Grafikte “{label}” değeri kaç?"),
    ),
    "bar.max": _t(
        "Which bar is the tallest?", "哪个柱子最高？", "أي عمود هو الأطول؟",
        "Qual barra é a mais alta?", "Какой столбец самый высокий?", "En uzun çubuk hangisi?",
    ),
    "bar.min": _t(
        "Which bar is the shortest?", "哪个柱子最矮？", "أي عمود هو الأقصر؟",
        "Qual barra é a mais baixa?", "Какой столбец самый низкий?", "En kısa çubuk hangisi?",
    ),
    "line.max": _t(
        "In which month is the value highest?", "哪个月的数值最高？", "في أي شهر تكون القيمة أعلى؟",
        "Em que mês o valor é mais alto?", "В каком месяце значение самое высокое?",
        "Değer hangi ayda en yüksek?",
    ),
    "line.min": _t(
        "In which month is the value lowest?", "哪个月的数值最低？", "في أي شهر تكون القيمة أدنى؟",
        "Em que mês o valor é mais baixo?", "В каком месяце значение самое низкое?",
        "Değer hangi ayda en düşük?",
    ),
    "table.cell": _t(
        ("What is the value in row “{row}”, column “{col}”?", "In the table, what number is in the “{col}” column for “{row}”?"),
        ("表中“{row}”行、“{col}”列的数值是多少？", "“{row}”在“{col}”这一列的数字是多少？"),
        ("ما القيمة في صف «{row}» وعمود «{col}»؟", "ما الرقم في عمود «{col}» لـ«{row}»؟"),
        ("Qual é o valor na linha “{row}”, coluna “{col}”?", "Que número aparece na coluna “{col}” para “{row}”?"),
        ("Какое значение в строке «{row}», столбце «{col}»?", "Какое число в столбце «{col}» для строки «{row}»?"),
        ("“{row}” satırı, “{col}” sütunundaki değer nedir?", "Tabloda “{row}” için “{col}” sütununda hangi sayı var?"),
    ),
    "sign.text": _t(
        ("What does the sign say?", "What is written on the sign?"),
        ("标志上写着什么？", "牌子上写的是什么？"),
        ("ماذا تقول اللافتة؟", "ما المكتوب على اللافتة؟"),
        ("O que diz a placa?", "O que está escrito na placa?"),
        ("Что написано на табличке?", "Какая надпись на табличке?"),
        ("Tabelada ne yazıyor?", "Tabelada yazan nedir?"),
    ),
    "sign.colour": _t(
        "What colour is the sign?", "标志是什么颜色？", "ما لون اللافتة؟",
        "De que cor é a placa?", "Какого цвета табличка?", "Tabela ne renk?",
    ),
    "shapes.count": _t(
        "How many {count} are there?", "图中有几个{count}？", "كم {count} في الصورة؟",
        "{count} há na imagem?", "Сколько {count} на картинке?", "Resimde kaç {count} var?",
    ),
    "shapes.total": _t(
        "How many shapes are in the picture?", "图中一共有几个图形？", "كم شكلًا في الصورة؟",
        "Quantas formas há na imagem?", "Сколько всего фигур на картинке?", "Resimde kaç şekil var?",
    ),
    "shapes.colour": _t(
        "What colour is {the}?", "{the}是什么颜色？", "ما لون {the}؟",
        "De que cor é {the}?", "Какого цвета {the}?", "{The} ne renk?",
    ),
    "shapes.which": _t(
        "Which shape is {which}?", "哪个图形是{which}的？", "ما الشكل ذو اللون {which}؟",
        "Qual é a forma de cor {which}?", "Какая фигура {which} цвета?", "Hangi şekil {which} renkte?",
    ),
    "shapes.lr": _t(
        "Is {the} on the left or the right?", "{the}在左边还是右边？", "هل {the} على اليسار أم على اليمين؟",
        "{The} está à esquerda ou à direita?", "{The} слева или справа?", "{The} solda mı, sağda mı?",
    ),
    "shapes.tb": _t(
        "Is {the} at the top or the bottom?", "{the}在上面还是下面？", "هل {the} في الأعلى أم في الأسفل؟",
        "{The} está em cima ou embaixo?", "{The} сверху или снизу?", "{The} üstte mi, altta mı?",
    ),
    "arith": _t(
        ("What is {a} {op} {b}?", "Calculate {a} {op} {b}."),
        ("{a} {op} {b} 等于多少？", "计算 {a} {op} {b}。"),
        ("ما ناتج {a} {op} {b}؟", "احسب {a} {op} {b}."),
        ("Quanto é {a} {op} {b}?", "Calcule {a} {op} {b}."),
        ("Сколько будет {a} {op} {b}?", "Вычислите {a} {op} {b}."),
        ("{a} {op} {b} kaç eder?", "{a} {op} {b} işleminin sonucu nedir?"),
    ),
    "translate": _t(
        ("What is “{word}” in English?", "Translate “{word}” into English.", "Give the English word for “{word}”."),
        ("“{word}”用中文怎么说？", "把“{word}”翻译成中文。", "“{word}”的中文是什么？"),
        ("ما معنى «{word}» بالعربية؟", "ترجم «{word}» إلى العربية.", "ما الكلمة العربية المقابلة لـ«{word}»؟"),
        ("Como se diz “{word}” em português?", "Traduza “{word}” para o português.", "Qual é a palavra em português para “{word}”?"),
        ("Как будет «{word}» по-русски?", "Переведите «{word}» на русский язык.", "Какое русское слово означает «{word}»?"),
        ("“{word}” Türkçede ne demek?", "“{word}” kelimesini Türkçeye çevirin.", "“{word}” sözcüğünün Türkçesi nedir?"),
    ),
    "facts.sides": _t(
        ("How many sides does a {shape} have?", "How many corners does a {shape} have?"),
        ("{shape}有几条边？", "{shape}有几个角？"),
        ("كم عدد أضلاع {shape}؟", "كم عدد زوايا {shape}؟"),
        ("Quantos lados tem {shape}?", "Quantos vértices tem {shape}?"),
        ("Сколько сторон у {shape}?", "Сколько углов у {shape}?"),
        ("{shape} kaç kenarı var?", "{shape} kaç köşesi var?"),
    ),
    "facts.next_day": _t(
        ("What day comes after {day}?", "Which day follows {day}?"),
        ("{day}的后一天是星期几？", "{day}之后是星期几？"),
        ("ما اليوم الذي يأتي بعد {day}؟", "أي يوم يلي {day}؟"),
        ("Que dia vem depois de {day}?", "Qual é o dia seguinte a {day}?"),
        ("Какой день идёт после {day}?", "Какой день следует за {day_ins}?"),
        ("{day} gününden sonra hangi gün gelir?", "{day} gününün ertesi günü hangisidir?"),
    ),
    "facts.digits": _t(
        ("Write the number “{word}” in digits.", "Write “{word}” as a number."),
        ("“{word}”用阿拉伯数字怎么写？", "“{word}”写成数字是多少？"),
        ("اكتب العدد «{word}» بالأرقام.", "ما الرقم الذي يساوي «{word}»؟"),
        ("Escreva o número “{word}” em algarismos.", "Escreva “{word}” como número."),
        ("Запишите число «{word}» цифрами.", "Какое число записано словом «{word}»?"),
        ("“{word}” sayısını rakamla yazın.", "“{word}” rakamla nasıl yazılır?"),
    ),
    "facts.larger": _t(
        "Which is larger, {a} or {b}?", "{a}和{b}哪个更大？", "أيهما أكبر: {a} أم {b}؟",
        "Qual é maior, {a} ou {b}?", "Какое число больше: {a} или {b}?",
        "{a} ve {b} sayılarından hangisi daha büyük?",
    ),
    # the colour of each item of ``synth_lexicon.ITEM_COLOURS``; each names its item with
    # the stem ``synth_text.ITEM_STEMS`` finds
    "facts.colour.bananas": _t(
        ("What colour are ripe bananas?", "Which colour is a ripe banana?"),
        ("成熟的香蕉是什么颜色？", "熟透的香蕉通常是什么颜色？"),
        ("ما لون الموز الناضج؟", "ما لون ثمرة الموز الناضجة؟"),
        ("De que cor são as bananas maduras?", "Qual é a cor de uma banana madura?"),
        ("Какого цвета спелые бананы?", "Какой цвет у спелого банана?"),
        ("Olgun muz ne renktir?", "Olgun bir muz hangi renktir?"),
    ),
    "facts.colour.tomatoes": _t(
        ("What colour are ripe tomatoes?", "Which colour is a ripe tomato?"),
        ("成熟的西红柿是什么颜色？", "熟透的西红柿通常是什么颜色？"),
        ("ما لون الطماطم الناضجة؟", "ما لون حبة الطماطم الناضجة؟"),
        ("De que cor são os tomates maduros?", "Qual é a cor de um tomate maduro?"),
        ("Какого цвета спелые помидоры?", "Какой цвет у спелого помидора?"),
        ("Olgun domates ne renktir?", "Olgun bir domates hangi renktir?"),
    ),
    "facts.colour.milk": _t(
        ("What colour is milk?", "Which colour does milk have?"),
        ("牛奶是什么颜色？", "牛奶通常是什么颜色的？"),
        ("ما لون الحليب؟", "ما هو لون الحليب؟"),
        ("De que cor é o leite?", "Qual é a cor do leite?"),
        ("Какого цвета молоко?", "Какой цвет у молока?"),
        ("Süt ne renktir?", "Sütün rengi nedir?"),
    ),
}

#: training-only rewordings of the facts questions: the same slots in other sentences, so a
#: model that sees each fact under many wordings learns that the answer follows from the slot,
#: not from the sentence. No held-out split draws from these (``make_facts(reworded=True)``
#: is used by training sets only), and none repeats a ``QUESTIONS`` phrasing.
REWORDED_FACTS: dict[str, dict[str, tuple[str, ...]]] = {
    "facts.sides": _t(
        ("Count the sides of a {shape}.", "A {shape} has how many sides?", "What is the number of sides of a {shape}?",
         "Tell me how many sides a {shape} has."),
        ("{shape}一共有几条边？", "请问{shape}有多少条边？", "{shape}的边数是多少？", "数一数{shape}有几条边。"),
        ("ما عدد أضلاع {shape}؟", "قل لي كم ضلعًا في {shape}.", "كم ضلعًا في {shape}؟", "اذكر عدد أضلاع {shape}."),
        ("Quantos lados possui {shape}?", "Diga quantos lados tem {shape}.", "Qual é o número de lados que tem {shape}?",
         "Conte os lados que tem {shape}."),
        ("Сколько всего сторон у {shape}?", "Назовите число сторон у {shape}.", "Какое число сторон у {shape}?",
         "Сколько сторон имеется у {shape}?"),
        ("{shape} kenar sayısı kaçtır?", "{shape} toplam kaç kenarı vardır?", "{shape} kaç tane kenarı var?",
         "{shape} kenar sayısını söyleyin."),
    ),
    "facts.next_day": _t(
        ("Name the day after {day}.", "If today is {day}, what day is tomorrow?", "What is the day after {day}?",
         "Tell me the day that comes after {day}."),
        ("{day}后面是星期几？", "如果今天是{day}，明天是星期几？", "{day}的下一天是星期几？", "{day}过后是星期几？"),
        ("ما هو اليوم بعد {day}؟", "إذا كان اليوم {day} فما يوم الغد؟", "ماذا يأتي بعد يوم {day}؟",
         "اذكر اليوم الذي يلي {day}."),
        ("Se hoje é {day}, que dia é amanhã?", "Diga o dia seguinte a {day}.", "Que dia chega após {day}?",
         "Que dia se segue a {day}?"),
        ("Назовите день после {day}.", "Если сегодня {day_nom}, какой день будет завтра?",
         "После {day} какой день?", "Назовите день, который идёт за {day_ins}."),
        ("Bugün {day} ise yarın hangi gün?", "{day} gününü hangi gün izler?", "{day} bittikten sonra hangi gün başlar?",
         "{day} gününün ardından hangi gün gelir?"),
    ),
    "facts.digits": _t(
        ("What number is “{word}”?", "Give “{word}” in digits.", "Convert “{word}” to digits.",
         "How do you write “{word}” with digits?"),
        ("把“{word}”写成阿拉伯数字。", "“{word}”对应的数字是几？", "“{word}”是数字几？", "请用数字写出“{word}”。"),
        ("حوّل «{word}» إلى أرقام.", "ما الرقم المقابل لـ«{word}»؟", "اكتب «{word}» رقمًا.", "كيف يُكتب «{word}» بالأرقام؟"),
        ("Qual número é “{word}”?", "Converta “{word}” em algarismos.", "Como se escreve “{word}” em algarismos?",
         "Dê “{word}” em algarismos."),
        ("Как выглядит «{word}» в цифрах?", "Переведите «{word}» в цифры.", "Какая цифра соответствует слову «{word}»?",
         "Как записать «{word}» цифрами?"),
        ("“{word}” hangi sayıdır?", "“{word}” kelimesini rakamla yazın.", "“{word}” rakamla kaçtır?",
         "“{word}” sayısını rakamlarla gösterin."),
    ),
    "facts.colour.bananas": _t(
        ("Name the colour of a ripe banana.", "Ripe bananas are what colour?", "What is the colour of ripe bananas?"),
        ("熟香蕉是什么颜色的？", "请说出成熟香蕉的颜色。", "成熟的香蕉通常呈什么颜色？"),
        ("بأي لون يكون الموز الناضج؟", "اذكر لون الموز الناضج.", "ما هو لون ثمار الموز الناضجة؟"),
        ("Qual a cor da banana madura?", "Diga a cor de uma banana madura.", "De que cor fica uma banana madura?"),
        ("Назовите цвет спелого банана.", "Каков цвет спелых бананов?", "Спелый банан какого цвета?"),
        ("Olgun muzun rengi nedir?", "Olgun muz hangi renkte olur?", "Olgun bir muzun rengini söyleyin."),
    ),
    "facts.colour.tomatoes": _t(
        ("Name the colour of a ripe tomato.", "Ripe tomatoes are what colour?", "What is the colour of ripe tomatoes?"),
        ("熟西红柿是什么颜色的？", "请说出成熟西红柿的颜色。", "成熟的西红柿通常呈什么颜色？"),
        ("بأي لون تكون الطماطم الناضجة؟", "اذكر لون الطماطم الناضجة.", "ما هو لون ثمار الطماطم الناضجة؟"),
        ("Qual a cor do tomate maduro?", "Diga a cor de um tomate maduro.", "De que cor fica um tomate maduro?"),
        ("Назовите цвет спелого помидора.", "Каков цвет спелых помидоров?", "Спелый помидор какого цвета?"),
        ("Olgun domatesin rengi nedir?", "Olgun domates hangi renkte olur?", "Olgun bir domatesin rengini söyleyin."),
    ),
    "facts.colour.milk": _t(
        ("Name the colour of milk.", "What colour does milk usually have?", "What is the colour of milk?"),
        ("请说出牛奶的颜色。", "牛奶呈什么颜色？", "牛奶的颜色是什么？"),
        ("بأي لون يكون الحليب؟", "اذكر لون الحليب.", "ما لون الحليب عادةً؟"),
        ("De que cor costuma ser o leite?", "Diga a cor do leite.", "O leite tem que cor?"),
        ("Назовите цвет молока.", "Каков цвет молока?", "Какого цвета бывает молоко?"),
        ("Süt hangi renkte olur?", "Süt genellikle ne renktir?", "Sütün rengini söyleyin."),
    ),
}

#: Russian instrumental of weekdays ("следует за понедельником")
WEEKDAYS_RU_INS = ["понедельником", "вторником", "средой", "четвергом", "пятницей", "субботой", "воскресеньем"]


def label(key: str, lang: str) -> str:
    """The (single) image label ``key`` in ``lang``."""
    return LABELS[key][lang][0]


def answer_word(key: str, lang: str) -> str:
    return ANSWERS[key][lang][0]


def ask(rng: random.Random, key: str, lang: str, templates: dict[str, dict[str, tuple[str, ...]]] | None = None,
        **slots: str) -> str:
    """A question: one phrasing of ``key`` drawn with ``rng`` (from ``templates``, default
    ``QUESTIONS``), slots filled in.

    ``{The}``/``{the}`` both come from the ``the`` slot; ``{The}`` capitalises its first
    letter for languages whose question starts with it (dotted İ for Turkish i).
    """
    options = (QUESTIONS if templates is None else templates)[key][lang]
    template = options[rng.randrange(len(options))]
    if "the" in slots:
        slots["The"] = _capitalise(slots["the"], lang)
    return template.format(**slots)


def _capitalise(text: str, lang: str) -> str:
    if not text:
        return text
    first = text[0]
    if lang == "tr" and first == "i":
        return "İ" + text[1:]
    return first.upper() + text[1:]
