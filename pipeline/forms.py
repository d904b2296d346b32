from django import forms

from pipeline.numbers import InvalidNumber, normalize_number


class NumberForm(forms.Form):
    number = forms.CharField(label="Mobile number", max_length=32)

    def clean_number(self) -> str:
        raw = self.cleaned_data["number"]
        try:
            normalize_number(raw=raw)
        except InvalidNumber as exc:
            raise forms.ValidationError(str(exc)) from None
        return raw


class CodeForm(forms.Form):
    code = forms.RegexField(
        label="Code from the SMS",
        regex=r"^\s*\d{6}\s*$",
        error_messages={"invalid": "the code has 6 digits"},
    )


class StatusForm(forms.Form):
    choice = forms.ChoiceField(choices=[("out", "Opt out"), ("in", "Opt back in")])
